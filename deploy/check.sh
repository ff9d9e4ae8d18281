#!/usr/bin/env bash
# Offline checks of the observability assets in deploy/ (run by .ci/run after the lint gate):
#
#   1. promtool check config / check rules on prometheus.yml and alerts.yml, promtool test rules
#      on alerts_test.yml;
#   2. check_assets.py: every metric and label in the alerts, their tests and the dashboard is one
#      the code defines and records; dashboard, provisioning and the commented Kubernetes scrape
#      example in prometheus.yml (Debian's promtool is built without Kubernetes discovery, so
#      that example is checked for shape only);
#   3. every dashboard query parses as PromQL (promtool check rules on a generated rules file);
#   4. the dashboard JSON type-checks against Grafana's schema (@grafana/schema, tsc --noEmit);
#   5. promtool check metrics on the real /metrics output of dispatch-api and dispatch-worker,
#      started for a moment without a database (set DISPATCH_CHECK_LIVE=0 to skip this step, or
#      DISPATCH_CHECK_DATABASE_URL to a migrated database for fuller output).
#
# Installs only what is missing: promtool (Debian package `prometheus`), Debian's python3 with
# python3-yaml, and the npm packages @grafana/schema and typescript (pinned, into
# $DISPATCH_CHECK_CACHE, default ~/.cache/dispatch/grafana-check, outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

GRAFANA_SCHEMA_VERSION=13.2.3
TYPESCRIPT_VERSION=5.9.3
CACHE="${DISPATCH_CHECK_CACHE:-$HOME/.cache/dispatch/grafana-check}"
PY=/usr/bin/python3

log() { echo "deploy/check: $*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Tools --------------------------------------------------------------------------------------

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
{ [ -x "$PY" ] && "$PY" -c 'import yaml' 2>/dev/null; } || missing+=(python3 python3-yaml)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  # --no-install-recommends: promtool only, without prometheus-node-exporter.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

stamp="@grafana/schema@$GRAFANA_SCHEMA_VERSION typescript@$TYPESCRIPT_VERSION"
if [ "$(cat "$CACHE/.installed" 2>/dev/null)" != "$stamp" ]; then
  log "installing npm packages into $CACHE: $stamp"
  mkdir -p "$CACHE"
  cat >"$CACHE/package.json" <<EOF
{
  "name": "dispatch-grafana-check",
  "private": true,
  "description": "Tools for deploy/check.sh in the Dispatch repository; safe to delete.",
  "dependencies": {
    "@grafana/schema": "$GRAFANA_SCHEMA_VERSION",
    "typescript": "$TYPESCRIPT_VERSION"
  }
}
EOF
  (cd "$CACHE" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
  echo "$stamp" >"$CACHE/.installed"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- 1. Prometheus configuration, rules and rule unit tests -------------------------------------

log "promtool $(promtool --version 2>&1 | awk 'NR==1 {print $3}')"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

# --- 2 and 3. Names and labels against the code; dashboard queries parse ------------------------

"$PY" deploy/check_assets.py --dashboard-rules "$work/dashboard-rules.yml"
promtool check rules "$work/dashboard-rules.yml" >/dev/null
log "every dashboard query parses as PromQL"

# --- 4. Dashboard JSON against Grafana's schema -------------------------------------------------

ts="$work/ts"
mkdir -p "$ts"
# resolveJsonModule import (schema-check.ts), plus a literal copy of the JSON checked with
# `satisfies` for enum values and misspelt fields.
{
  echo 'import type { Dashboard } from "@grafana/schema";'
  echo "import type { Exact } from \"$ROOT/deploy/grafana/schema-check\";"
  echo 'export const literal = ('
  cat deploy/grafana/dashboards/dispatch.json
  echo ') satisfies Exact<Dashboard>;'
} >"$ts/literal.ts"
cat >"$ts/tsconfig.json" <<EOF
{
  "compilerOptions": {
    "strict": true,
    "noEmit": true,
    "target": "ES2022",
    "module": "ESNext",
    "moduleResolution": "Bundler",
    "resolveJsonModule": true,
    "esModuleInterop": true,
    "skipLibCheck": true,
    "types": [],
    "baseUrl": ".",
    "paths": { "@grafana/schema": ["$CACHE/node_modules/@grafana/schema"] }
  },
  "files": ["$ROOT/deploy/grafana/schema-check.ts", "literal.ts"]
}
EOF
node "$CACHE/node_modules/typescript/bin/tsc" -p "$ts/tsconfig.json"
log "the dashboard type-checks against @grafana/schema $GRAFANA_SCHEMA_VERSION"

# --- 5. promtool check metrics on the binaries' real /metrics -----------------------------------

if [ "${DISPATCH_CHECK_LIVE:-1}" = 0 ]; then
  log "skipping the live /metrics check (DISPATCH_CHECK_LIVE=0)"
elif ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: skipping the live /metrics check"
else
  # A no-op after `cargo xtask test`, which builds every target.
  cargo build --quiet -p dispatch-api -p dispatch-worker
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  "$PY" deploy/scrape_metrics.py --bin-dir "$target_dir/debug" --out "$work"
  for binary in api worker; do
    # promtool lints best practices (counters end in _total, units, HELP) and exits non-zero
    # on any problem.
    promtool check metrics <"$work/$binary.metrics"
    log "dispatch-$binary /metrics passes promtool check metrics" \
      "($(grep -c '^# TYPE' "$work/$binary.metrics") families)"
  done
fi

log "passed"
