#!/usr/bin/env python3
"""Starts dispatch-api and dispatch-worker for a moment and saves what their /metrics serve.

Run by deploy/check.sh, which lints the output with `promtool check metrics`. Both binaries
start without a database (DATABASE_URL points at a port nothing listens on, so requests that
need PostgreSQL answer 503 quickly); set DISPATCH_CHECK_DATABASE_URL to a migrated database to
use it instead. Before scraping, a few API requests are made so that the HTTP metrics exist.
Writes api.metrics and worker.metrics into --out, and fails if a metric family is served
that crates/telemetry/src/metrics.rs does not define.
"""

import argparse
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, data: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until_up(url: str, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"scrape_metrics: {name} exited with status {proc.returncode}")
        try:
            request(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"scrape_metrics: {name} did not answer {url} within 20 s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()

    database_url = os.environ.get("DISPATCH_CHECK_DATABASE_URL") or (
        f"postgres://postgres@127.0.0.1:{free_port()}/none?sslmode=disable")
    api_addr = f"127.0.0.1:{free_port()}"
    worker_addr = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env.update({
        "DATABASE_URL": database_url,
        "DISPATCH_LOG_FORMAT": "json",
        # The API refuses to start without a key; /metrics itself needs none.
        "DISPATCH_API_KEYS": "scrape-check-key-0123456789",
        # Both binaries refuse to start without the keys that seal subscription secrets.
        "DISPATCH_SECRET_KEYS": "scrape:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
        "DISPATCH_DB_CONNECT_TIMEOUT_MS": "300",
        "RUST_LOG": "error",
    })
    procs: list[subprocess.Popen] = []
    try:
        for name, addr in (("dispatch-api", api_addr), ("dispatch-worker", worker_addr)):
            procs.append(subprocess.Popen(
                [str(args.bin_dir / name)], env={**env, "ADDR": addr},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        api, worker = f"http://{api_addr}", f"http://{worker_addr}"
        wait_until_up(f"{api}/healthz", procs[0], "dispatch-api")
        wait_until_up(f"{worker}/healthz", procs[1], "dispatch-worker")
        request(f"{api}/healthz")
        request(f"{api}/readyz")
        request(f"{api}/no-such-route")
        request(f"{api}/events", b'{"id":"evt_check","type":"check.metrics","source":"check",'
                                 b'"data":{}}')
        request(f"{api}/metrics")  # so that the second scrape has its route too
        outputs = {"api": request(f"{api}/metrics"), "worker": request(f"{worker}/metrics")}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    defined = set(re.findall(r'pub const \w+: &str = "(dispatch_\w+)";',
                             (ROOT / "crates/telemetry/src/metrics.rs").read_text()))
    failed = False
    for name, (status, body) in outputs.items():
        if status != 200:
            print(f"scrape_metrics: dispatch-{name} /metrics answered {status}", file=sys.stderr)
            failed = True
            continue
        (args.out / f"{name}.metrics").write_bytes(body)
        for family in re.findall(r"^# TYPE (\S+)", body.decode(), re.MULTILINE):
            if family not in defined:
                print(f"scrape_metrics: dispatch-{name} serves {family}, which metrics.rs "
                      "does not define", file=sys.stderr)
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
