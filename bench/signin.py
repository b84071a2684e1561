"""Sign-in throughput under gunicorn, against the ceiling of raw argon2id verification.

    .venv/bin/python bench/signin.py [--seconds N] [--concurrency C] [--warmup W]

1. A fresh SQLite database in a temporary directory: `flask --app idp db upgrade` and
   `flask --app idp user create` (production settings, default argon2id m=19456 KiB, t=2, p=1).
2. The ceiling: argon2id verifications per second with one process per core (2), service
   not running.
3. The service under gunicorn (2 sync workers, plain HTTP on 127.0.0.1 as behind a
   TLS-terminating proxy; X-Forwarded-Proto: https is trusted from 127.0.0.1), driven by C
   client threads doing GET /login + POST /login for N seconds after a warm-up.
4. One table; the overhead of the service over the raw hash.

A benchmark: it never asserts, it prints figures. Exit 0 when it ran; 1 when the service
did not start, setup failed, or every sign-in failed.
"""

from __future__ import annotations

import argparse
import collections
import html
import http.client
import multiprocessing
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
USERNAME = "bench"
EMAIL = "bench@example.com"
PASSWORD = "correct horse battery staple"  # >= 12 characters (password policy)
# The app's defaults (config.py), which are OWASP's; the service runs with these too.
ARGON2 = dict(time_cost=2, memory_cost=19456, parallelism=1)
CORES = os.cpu_count() or 2
HASH_PROCS = 2
WORKERS = 2

CSRF_RE = re.compile(r"<input\b[^>]*\bname=\"csrf_token\"[^>]*>", re.I)
VALUE_RE = re.compile(r"\bvalue=\"([^\"]*)\"")


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


# ---------------------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_flask(env: dict[str, str], args: list[str], stdin: str | None = None) -> str:
    cmd = [str(VENV_BIN / "flask"), "--app", "idp", *args]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise BenchError(
            f"`flask --app idp {' '.join(args)}` failed ({proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


# ---------------------------------------------------------------------------- ceiling


def _hash_worker(encoded: str, start: float, warmup: float, seconds: float, out) -> None:
    from argon2 import PasswordHasher, Type

    ph = PasswordHasher(**ARGON2, type=Type.ID)
    begin, end = start + warmup, start + warmup + seconds
    lat: list[float] = []
    cpu = 0.0
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        if t0 >= end:
            break
        ph.verify(encoded, PASSWORD)
        t1, c1 = time.perf_counter(), time.process_time()
        if t0 >= begin and t1 <= end:
            lat.append(t1 - t0)
            cpu += c1 - c0
    out.put((lat, cpu))


def measure_ceiling(seconds: float, warmup: float) -> dict:
    """Raw argon2id verifications/s with one process per core, for the same window."""
    from argon2 import PasswordHasher, Type

    encoded = PasswordHasher(**ARGON2, type=Type.ID).hash(PASSWORD)
    q: multiprocessing.Queue = multiprocessing.Queue()
    start = time.perf_counter() + 0.5  # every process begins together
    procs = [
        multiprocessing.Process(target=_hash_worker, args=(encoded, start, warmup, seconds, q))
        for _ in range(HASH_PROCS)
    ]
    for p in procs:
        p.start()
    lat: list[float] = []
    cpu = 0.0
    try:
        time.sleep(max(0.0, start + warmup - time.perf_counter()))
        sys0 = system_cpu()
        time.sleep(max(0.0, start + warmup + seconds - time.perf_counter()))
        sys1 = system_cpu()
        for _ in procs:
            part, part_cpu = q.get(timeout=seconds + warmup + 60)
            lat += part
            cpu += part_cpu
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    wall = sys1[1] - sys0[1]
    return {
        "n": len(lat),
        "rate": len(lat) / seconds,
        "lat": lat,
        "cpu_per_op": cpu / len(lat) if lat else float("nan"),
        # CPU used by everything else on the machine during the measured window.
        "others_pct": 100 * (sys1[0] - sys0[0] - cpu) / wall,
    }


def system_cpu() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds), from /proc/stat (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick  # all but idle and iowait
    return busy, time.perf_counter()


# ---------------------------------------------------------------------------- service


class Service:
    """gunicorn in its own process group; stop() always ends it (and its workers)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path):
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            str(VENV_BIN / "gunicorn"),
            "--chdir",
            str(ROOT),
            "--workers",
            str(WORKERS),
            "--worker-class",
            "sync",
            "--bind",
            f"127.0.0.1:{port}",
            "--forwarded-allow-ips",
            "127.0.0.1",
            "--log-level",
            "warning",
            "idp:app",
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"gunicorn exited with {self.proc.returncode} before it was "
                    f"ready:\n{self.log_tail()}"
                )
            try:
                status, _, _, _ = request(self.port, "GET", "/login")
                if status == 200:
                    # Both workers must have imported the app, not just the first to answer.
                    if len(self.worker_pids()) >= WORKERS:
                        return
                last = f"GET /login answered {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise BenchError(f"gunicorn not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(x) for x in kids.split()]

    def cpu_seconds(self) -> float:
        """user+sys CPU of the master and its workers, from /proc (Linux)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.proc.pid, *self.worker_pids()]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return total

    def log_tail(self, lines: int = 30) -> str:
        try:
            self._log.flush()
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


# ---------------------------------------------------------------------------- client


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> tuple[int, str, http.client.HTTPMessage, float]:
    """One request on a new connection (gunicorn's sync workers close it anyway)."""
    h = {"Host": f"localhost:{port}", "X-Forwarded-Proto": "https", "Connection": "close"}
    h.update(headers or {})
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        return resp.status, text, resp.msg, time.perf_counter() - t0
    finally:
        conn.close()


def sign_in_once(port: int) -> tuple[str | None, float, float]:
    """(error or None, GET seconds, POST seconds)."""
    status, page, msg, t_get = request(port, "GET", "/login")
    if status != 200:
        return f"GET /login -> {status}", t_get, 0.0
    m = CSRF_RE.search(page)
    v = VALUE_RE.search(m.group(0)) if m else None
    if not v:
        return "GET /login: no csrf_token input", t_get, 0.0
    token = html.unescape(v.group(1))
    cookie = None
    for header in msg.get_all("Set-Cookie") or []:
        pair = header.split(";", 1)[0].strip()
        if pair.startswith("__Host-session="):
            cookie = pair
    if cookie is None:
        return "GET /login: no __Host-session cookie", t_get, 0.0
    body = urllib.parse.urlencode(
        {"username": USERNAME, "password": PASSWORD, "csrf_token": token, "next": ""}
    )
    status, page, msg, t_post = request(
        port,
        "POST",
        "/login",
        {
            "Cookie": cookie,
            "Referer": f"https://localhost:{port}/login",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        body,
    )
    location = msg.get("Location", "")
    if status != 302 or urllib.parse.urlsplit(location).path != "/account":
        return f"POST /login -> {status} {location}".rstrip(), t_get, t_post
    return None, t_get, t_post


def drive(port: int, concurrency: int, seconds: float, warmup: float, service: Service) -> dict:
    start = time.perf_counter()
    begin, end = start + warmup, start + warmup + seconds
    lock = threading.Lock()
    full: list[float] = []
    gets: list[float] = []
    posts: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                err, t_get, t_post = sign_in_once(port)
            except Exception as exc:  # noqa: BLE001 - every failure is a figure, not a crash
                err, t_get, t_post = f"{type(exc).__name__}: {exc}", 0.0, 0.0
            t1 = time.perf_counter()
            if begin <= t1 <= end:  # completed inside the measured window
                with lock:
                    if err:
                        errors[err] += 1
                    else:
                        full.append(t1 - t0)
                        gets.append(t_get)
                        posts.append(t_post)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    try:
        time.sleep(max(0.0, begin - time.perf_counter()))
        ru0, cpu0, (busy0, w0) = (
            resource.getrusage(resource.RUSAGE_SELF),
            service.cpu_seconds(),
            system_cpu(),
        )
        time.sleep(max(0.0, end - time.perf_counter()))
        ru1, cpu1, (busy1, w1) = (
            resource.getrusage(resource.RUSAGE_SELF),
            service.cpu_seconds(),
            system_cpu(),
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=35)
    wall = w1 - w0
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "full": full,
        "get": gets,
        "post": posts,
        "errors": errors,
        "rate": len(full) / seconds,
        "client_cpu_pct": 100 * client_cpu / wall,
        "service_cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "service_cpu_s": cpu1 - cpu0,
        "others_pct": 100 * ((busy1 - busy0) - client_cpu - (cpu1 - cpu0)) / wall,
    }


# ---------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    """q-th percentile in ms (nearest rank); nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return 1000 * s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time (default 20)")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (default 3)")
    args = ap.parse_args()
    if args.seconds <= 0 or args.concurrency < 1 or args.warmup < 0:
        ap.error("--seconds must be > 0, --concurrency >= 1, --warmup >= 0")

    # SIGTERM takes the same path as Ctrl-C: the finally blocks stop gunicorn.
    signal.signal(signal.SIGTERM, _interrupt)

    service: Service | None = None
    with tempfile.TemporaryDirectory(prefix="idp-bench-") as tmp:
        try:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
            env.update(
                IDP_DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3",
                IDP_SECRET_KEY=secrets.token_hex(32),
                IDP_ENV="production",
                IDP_ISSUER=f"https://localhost:{port}",
                PYTHONUNBUFFERED="1",
            )
            print(
                f"setup: database in {tmp}; argon2id m={ARGON2['memory_cost']} KiB "
                f"t={ARGON2['time_cost']} p={ARGON2['parallelism']}; {CORES} cores",
                flush=True,
            )
            run_flask(env, ["db", "upgrade"])
            run_flask(
                env,
                ["user", "create", "--username", USERNAME, "--email", EMAIL, "--password-stdin"],
                stdin=PASSWORD + "\n",
            )

            print(
                f"ceiling: argon2id verify, {HASH_PROCS} processes, {args.warmup:g} s warm-up "
                f"+ {args.seconds:g} s (service not running) ...",
                flush=True,
            )
            ceiling = measure_ceiling(args.seconds, args.warmup)

            service = Service(env, port, Path(tmp) / "gunicorn.log")
            service.wait_ready()
            print(
                f"service: gunicorn, {WORKERS} sync workers on 127.0.0.1:{port}; "
                f"{args.concurrency} client threads, {args.warmup:g} s warm-up "
                f"+ {args.seconds:g} s ...",
                flush=True,
            )
            load = drive(port, args.concurrency, args.seconds, args.warmup, service)
            if service.proc.poll() is not None:
                print(f"warning: gunicorn exited during the run:\n{service.log_tail()}")
        except BenchError as exc:
            print(f"signin bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("signin bench: interrupted", file=sys.stderr)
            return 130
        finally:
            if service is not None:
                service.stop()

    ok, errors = len(load["full"]), load["errors"]
    c_rate, c_lat = ceiling["rate"], ceiling["lat"]
    rate = load["rate"]
    rows = [
        ("argon2id verify (raw)", c_rate, c_lat, c_rate),
        ("sign-in (GET+POST)", rate, load["full"], c_rate),
        ("  POST /login", rate, load["post"], c_rate),
        ("  GET /login", rate, load["get"], None),
    ]
    print()
    print(
        f"{'operation':<24}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ceiling ops/s':>15}{'ratio':>8}"
    )
    for name, r, lat, ceil in rows:
        ceil_s = f"{ceil:.1f}" if ceil else "-"
        ratio_s = f"{r / ceil:.3f}" if ceil else "-"
        print(
            f"{name:<24}{r:>9.1f}{pct(lat, 50):>9.1f}{pct(lat, 99):>9.1f}{ceil_s:>15}{ratio_s:>8}"
        )
    print()
    overhead = (c_rate / rate - 1) * 100 if rate else float("inf")
    print(
        f"overhead of the service over the raw hash: {overhead:+.1f}% "
        f"(ceiling/throughput - 1; target < 10%)"
    )
    print(
        f"sign-in latency (GET+POST): p50 {pct(load['full'], 50):.1f} ms, "
        f"p99 {pct(load['full'], 99):.1f} ms; POST only: p50 {pct(load['post'], 50):.1f} ms, "
        f"p99 {pct(load['post'], 99):.1f} ms; raw verify p50 {pct(c_lat, 50):.1f} ms"
    )
    print(
        f"sign-ins: {ok} ok, {sum(errors.values())} errors in {args.seconds:g} s "
        f"({args.concurrency} client threads, {WORKERS} gunicorn workers)"
    )
    for err, n in errors.most_common(5):
        print(f"  error x{n}: {err}")
    print(
        f"load generator CPU: {load['client_cpu_pct']:.1f}% of one core "
        f"(user+sys / wall, {CORES} cores available)"
    )
    per = 1000 * load["service_cpu_s"] / ok if ok else float("nan")
    raw_per = 1000 * ceiling["cpu_per_op"]
    print(
        f"service CPU: {load['service_cpu_pct']:.1f}% of one core; {per:.1f} ms per sign-in "
        f"vs {raw_per:.1f} ms per raw verify: CPU overhead {(per / raw_per - 1) * 100:+.1f}%"
    )
    noisy = max(ceiling["others_pct"], load["others_pct"]) > 10
    print(
        f"other processes on the machine: {ceiling['others_pct']:.0f}% of one core during "
        f"the ceiling, {load['others_pct']:.0f}% during the service run"
        + (
            " -- NOISY: throughput figures are unreliable, run again on a quiet machine"
            if noisy
            else ""
        )
    )
    print("TLS is excluded (plain HTTP on loopback, as behind a TLS-terminating proxy).")

    if ok == 0:
        print("signin bench: every sign-in failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
