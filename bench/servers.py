"""Servers side by side in one run: slow clients, then throughput, for each candidate.

    .venv/bin/python bench/servers.py [--slow 200] [--seconds 10] [--servers a,b,...]

Each candidate serves the same fresh SQLite database (bench/oidc.py's setup) with 2 worker
processes, plain HTTP on 127.0.0.1, one after the other in this run:
1. slow clients: `--slow` connections each send one byte of a request's headers per second
   while one normal client sends GET /healthz requests one after the other (5 s timeout
   each) for `--seconds`: how many it got answered, their p99 (a timeout counts as 5 s);
2. throughput, no slow clients: `ab` (Apache Bench, C), 8 keep-alive connections, for
   `--seconds` each: GET /healthz and POST /token (client credentials, RS256 JWT).
A benchmark: it prints figures, never asserts. Machine shared with other jobs: compare
only figures of one run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    HEADERS,
    ROOT,
    VENV_BIN,
    BenchError,
    free_port,
    get,
    proc_cpu_seconds,
    slow_run,
)
from oidc import prepare

WORKERS = 2
CANDIDATES = {
    "gunicorn-sync": lambda port: [
        str(VENV_BIN / "gunicorn"), "--workers", str(WORKERS),
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "idp:app",
    ],
    "gunicorn-gthread": lambda port: [
        str(VENV_BIN / "gunicorn"), "--workers", str(WORKERS),
        "--worker-class", "gthread", "--threads", "4",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "idp:app",
    ],
    "granian": lambda port: [
        str(VENV_BIN / "granian"), "--interface", "wsgi", "--workers", str(WORKERS),
        "--blocking-threads", "1", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "idp:app",
    ],
    "make-serve": lambda port: [sys.executable, "-m", "identity.serve"],
}  # fmt: skip


def start(name: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    env = {**env, "IDP_BIND": f"127.0.0.1:{port}", "IDP_WORKERS": str(WORKERS)}
    proc = subprocess.Popen(
        CANDIDATES[name](port),
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            # Every worker must have loaded the app: a few answers in a row.
            for _ in range(8):
                get(port, "/healthz", 5)
            return proc
        except OSError:
            time.sleep(0.3)
    raise BenchError(f"{name} not ready: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def group_cpu(pgid: int) -> float:
    """user+sys CPU seconds of every live process of a process group (server and workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                total += proc_cpu_seconds(int(entry.name))
    return total


def ab(
    port: int, seconds: float, path: str, post: Path | None, auth: str | None, pgid: int
) -> tuple[float, float]:
    """(requests per second, server CPU milliseconds per request)."""
    cmd = ["ab", "-q", "-k", "-c", "8", "-t", str(seconds), "-n", "10000000", "-s", "10"]
    for k, v in HEADERS.items():
        cmd += ["-H", f"{k}: {v}"]
    if post:
        cmd += ["-p", str(post), "-T", "application/x-www-form-urlencoded"]
    if auth:
        cmd += ["-H", f"Authorization: {auth}"]
    cpu = group_cpu(pgid)
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=120
    ).stdout
    cpu = group_cpu(pgid) - cpu
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if not rate or (failed and int(failed.group(1))) or non2xx:
        raise BenchError(f"ab on {path}: {out[-600:]}")
    done = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))
    return float(rate.group(1)), 1000 * cpu / max(done, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--servers", default="gunicorn-sync,gunicorn-gthread,granian,make-serve")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="idp-servers-") as tmp:
        env, _, _, service_app = prepare(tmp, IDP_TRUSTED_PROXIES="1")
        env["PROMETHEUS_MULTIPROC_DIR"] = tmp
        body = Path(tmp) / "cc.form"
        body.write_text("grant_type=client_credentials")
        for name in args.servers.split(","):
            port = free_port()
            proc = start(name, env, port, Path(tmp) / f"{name}.log")
            try:
                slow = slow_run(port, args.slow, args.seconds)
                health = ab(port, args.seconds, "/healthz", None, None, proc.pid)
                cc = ab(port, args.seconds, "/token", body, service_app.basic, proc.pid)
            finally:
                stop(proc)
            rows.append((name, slow, health, cc))
            print(f"{name}: {slow}, healthz {health}, cc {cc}", flush=True)
    print(f"\n{args.slow} slow clients, {args.seconds:.0f} s windows, {WORKERS} workers each")
    print("(ms CPU/req: the server's processes' user+sys CPU per answered request)")
    print(
        f"{'server':18} {'answered':>12} {'p99 ms':>8} {'healthz/s':>10} {'ms CPU/req':>10}"
        f" {'cc/s':>7} {'ms CPU/req':>10}"
    )
    for name, slow, health, cc in rows:
        answered = f"{slow['ok']}/{slow['sent']}"
        print(
            f"{name:18} {answered:>12} {slow['p99_ms']:8.1f} {health[0]:10.0f} {health[1]:10.3f}"
            f" {cc[0]:7.0f} {cc[1]:10.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
