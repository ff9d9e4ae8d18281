#!/bin/bash
# dispatch-healthcheck [PATH]: exits 0 when GET PATH (default /healthz) on this container's
# dispatch-api or dispatch-worker answers 200. Installed in the image as
# /usr/local/bin/dispatch-healthcheck and used by its HEALTHCHECK and by docker-compose.yml.
# The runtime image has no curl: this speaks HTTP/1.0 over bash's /dev/tcp.
#
# The address is DISPATCH_ADDR, else ADDR, else the binary's default (:8081 when a
# dispatch-worker process runs in the container, :8080 otherwise). A wildcard host (":8080",
# "0.0.0.0:8080", "[::]:8080") is reached on 127.0.0.1.
set -uo pipefail

path=${1:-/healthz}
addr=${DISPATCH_ADDR:-${ADDR:-}}
if [ -z "$addr" ]; then
  # /proc/<pid>/comm holds at most 15 characters: exactly "dispatch-worker".
  if grep -qsx dispatch-worker /proc/[0-9]*/comm; then addr=:8081; else addr=:8080; fi
fi
port=${addr##*:}
host=${addr%:*}
host=${host#[}
host=${host%]}
case "$host" in "" | 0.0.0.0 | "::") host=127.0.0.1 ;; esac

if ! exec 3<>"/dev/tcp/$host/$port"; then
  echo "dispatch-healthcheck: cannot connect to $host:$port" >&2
  exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
status=""
# /readyz may take up to DISPATCH_DB_CONNECT_TIMEOUT_MS (5 s) while the database is away.
IFS= read -r -t 10 status <&3
exec 3<&-
case "$status" in
  "HTTP/1."[01]" 200"*) exit 0 ;;
esac
echo "dispatch-healthcheck: GET $path on $host:$port answered: ${status:-nothing}" >&2
exit 1
