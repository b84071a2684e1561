"""Shared pieces of the benchmarks (signin.py, ldap_signin.py, oidc.py).

gunicorn in its own process group, the GET+POST /login client, client threads repeating an
operation over a common window, CPU accounting from /proc, a timed loop in N processes for
the raw ceilings, percentiles. Linux only (/proc).
"""

from __future__ import annotations

import collections
import html
import http.client
import multiprocessing
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CORES = os.cpu_count() or 2
WORKERS = 2

CSRF_RE = re.compile(r"<input\b[^>]*\bname=\"csrf_token\"[^>]*>", re.I)
VALUE_RE = re.compile(r"\bvalue=\"([^\"]*)\"")

# name -> function returning CPU seconds so far (e.g. of slapd), sampled around a window.
Probes = dict[str, Callable[[], float]]


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


def interrupt(*_: object) -> None:
    """SIGTERM handler: take the same path as Ctrl-C, so finally blocks stop the servers."""
    raise KeyboardInterrupt


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


# ---------------------------------------------------------------------------- CPU


def system_cpu() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds), from /proc/stat (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick  # all but idle and iowait
    return busy, time.perf_counter()


def proc_cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a process (all its threads), from /proc/<pid>/stat; 0 when
    it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def timewait_sockets() -> int:
    """TCP sockets in TIME_WAIT (state 06). Tens of thousands make every connect() search
    long for a free ephemeral port, in kernel time: new-connection figures then drop."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f, None)
                n += sum(1 for line in f if line.split(None, 4)[3] == "06")
        except OSError:
            continue
    return n


# ---------------------------------------------------------------------------- ceilings


def timed_loop(
    op: Callable[[], str | None], start: float, warmup: float, seconds: float
) -> tuple[list[float], float, collections.Counter[str]]:
    """Repeat op() until start+warmup+seconds. Returns the latencies and CPU seconds of the
    successful calls that ran wholly inside the measured window, and the errors counted
    there (op returns an error text, or raises)."""
    begin, end = start + warmup, start + warmup + seconds
    lat: list[float] = []
    cpu = 0.0
    errors: collections.Counter[str] = collections.Counter()
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        if t0 >= end:
            break
        try:
            err = op()
        except Exception as exc:  # noqa: BLE001 - a failure is a figure, not a crash
            err = f"{type(exc).__name__}: {exc}"
        t1, c1 = time.perf_counter(), time.process_time()
        if t0 >= begin and t1 <= end:
            if err:
                errors[err] += 1
            else:
                lat.append(t1 - t0)
                cpu += c1 - c0
    return lat, cpu, errors


def _child(target: Callable[..., None], *args: object) -> None:
    """A measuring process: the parent handles Ctrl-C and SIGTERM and ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    target(*args)


def measure_processes(
    target: Callable[..., None],
    args: tuple,
    procs: int,
    seconds: float,
    warmup: float,
    probes: Probes | None = None,
) -> dict:
    """Run target(start, warmup, seconds, queue, *args) in `procs` processes; each puts
    timed_loop()'s result on the queue. Returns the rate and latencies over the common
    window, the CPU of the processes (from /proc) and of each probe, and of the rest of
    the machine."""
    probes = probes or {}
    q: multiprocessing.Queue = multiprocessing.Queue()
    start = time.perf_counter() + 0.5  # every process begins together
    workers = [
        multiprocessing.Process(
            target=_child, args=(target, start, warmup, seconds, q, *args), daemon=True
        )
        for _ in range(procs)
    ]
    for p in workers:
        p.start()
    lat: list[float] = []
    cpu = 0.0
    errors: collections.Counter[str] = collections.Counter()
    try:
        time.sleep(max(0.0, start + warmup - time.perf_counter()))
        sys0, own0 = system_cpu(), sum(proc_cpu_seconds(p.pid) for p in workers)
        probe0 = {name: f() for name, f in probes.items()}
        time.sleep(max(0.0, start + warmup + seconds - time.perf_counter()))
        sys1, own1 = system_cpu(), sum(proc_cpu_seconds(p.pid) for p in workers)
        probe1 = {name: f() for name, f in probes.items()}
        for _ in workers:
            part, part_cpu, part_errors = q.get(timeout=seconds + warmup + 60)
            lat += part
            cpu += part_cpu
            errors.update(part_errors)
    except BaseException:  # Ctrl-C, SIGTERM, a timeout: no waiting for the window to end
        for p in workers:
            p.terminate()
        raise
    finally:
        for p in workers:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    wall = sys1[1] - sys0[1]
    probe_s = {name: probe1[name] - probe0[name] for name in probes}
    return {
        "n": len(lat),
        "rate": len(lat) / seconds,
        "lat": lat,
        "errors": errors,
        "cpu_per_op": cpu / len(lat) if lat else float("nan"),
        "cpu_pct": 100 * (own1 - own0) / wall,
        "probe_s": probe_s,
        "probe_pct": {name: 100 * s / wall for name, s in probe_s.items()},
        # CPU used by everything else on the machine during the measured window.
        "others_pct": 100 * (sys1[0] - sys0[0] - (own1 - own0) - sum(probe_s.values())) / wall,
    }


# ---------------------------------------------------------------------------- service


class Service:
    """gunicorn in its own process group; stop() always ends it (and its workers)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, workers: int = WORKERS):
        self.port = port
        self.workers = workers
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            str(VENV_BIN / "gunicorn"),
            "--chdir",
            str(ROOT),
            "--workers",
            str(workers),
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
                    if len(self.worker_pids()) >= self.workers:
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
        return sum(proc_cpu_seconds(pid) for pid in [self.proc.pid, *self.worker_pids()])

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


def session_cookie(msg: http.client.HTTPMessage) -> str | None:
    """The `__Host-session=...` pair a response sets, if any."""
    cookie = None
    for header in msg.get_all("Set-Cookie") or []:
        pair = header.split(";", 1)[0].strip()
        if pair.startswith("__Host-session="):
            cookie = pair
    return cookie


def sign_in_session(
    port: int, username: str, password: str
) -> tuple[str | None, str | None, float, float]:
    """GET /login then POST /login. (error or None, the signed-in session cookie, GET
    seconds, POST seconds)."""
    status, page, msg, t_get = request(port, "GET", "/login")
    if status != 200:
        return f"GET /login -> {status}", None, t_get, 0.0
    m = CSRF_RE.search(page)
    v = VALUE_RE.search(m.group(0)) if m else None
    if not v:
        return "GET /login: no csrf_token input", None, t_get, 0.0
    token = html.unescape(v.group(1))
    cookie = session_cookie(msg)
    if cookie is None:
        return "GET /login: no __Host-session cookie", None, t_get, 0.0
    body = urllib.parse.urlencode(
        {"username": username, "password": password, "csrf_token": token, "next": ""}
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
        return f"POST /login -> {status} {location}".rstrip(), None, t_get, t_post
    return None, session_cookie(msg) or cookie, t_get, t_post


def sign_in_once(port: int, username: str, password: str) -> tuple[str | None, float, float]:
    """GET /login then POST /login. (error or None, GET seconds, POST seconds)."""
    err, _, t_get, t_post = sign_in_session(port, username, password)
    return err, t_get, t_post


# One client operation: (error or None, {part name: seconds}) for sub-latencies.
Op = Callable[[], tuple[str | None, dict[str, float]]]


def drive_ops(
    concurrency: int,
    seconds: float,
    warmup: float,
    service: Service,
    make_op: Callable[[int], Op],
    probes: Probes | None = None,
) -> dict:
    """C client threads; thread i first calls make_op(i) (untimed: its own session, token
    chain...), then all start together and repeat their op for warmup+seconds. Only ops
    completing inside the measured window count. Latencies (whole op and per part), errors
    (setup failures included), CPU of this process, the service, each probe, and the rest
    of the machine over that window."""
    probes = probes or {}
    lock = threading.Lock()
    full: list[float] = []
    parts: dict[str, list[float]] = collections.defaultdict(list)
    errors: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    window: dict[str, float] = {}

    def set_window() -> None:  # run by the last thread to finish its setup
        start = time.perf_counter()
        window["begin"], window["end"] = start + warmup, start + warmup + seconds

    ready = threading.Barrier(concurrency, action=set_window)

    def client(i: int) -> None:
        op: Op | None = None
        try:
            op = make_op(i)
        except Exception as exc:  # noqa: BLE001 - a failure is a figure, not a crash
            with lock:
                errors[f"setup: {type(exc).__name__}: {exc}"] += 1
        try:
            ready.wait(timeout=300)
        except threading.BrokenBarrierError:
            return
        begin, end = window["begin"], window["end"]
        while op is not None and not stop.is_set():
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                err, part = op()
            except Exception as exc:  # noqa: BLE001 - every failure is a figure, not a crash
                err, part = f"{type(exc).__name__}: {exc}", {}
            t1 = time.perf_counter()
            if begin <= t1 <= end:  # completed inside the measured window
                with lock:
                    if err:
                        errors[err] += 1
                    else:
                        full.append(t1 - t0)
                        for name, t in part.items():
                            parts[name].append(t)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    try:
        while "end" not in window:
            if ready.broken:
                raise BenchError("client setup did not finish in 300 s")
            time.sleep(0.01)
        begin, end = window["begin"], window["end"]
        time.sleep(max(0.0, begin - time.perf_counter()))
        ru0, cpu0, probe0, (busy0, w0) = (
            resource.getrusage(resource.RUSAGE_SELF),
            service.cpu_seconds(),
            {name: f() for name, f in probes.items()},
            system_cpu(),
        )
        time.sleep(max(0.0, end - time.perf_counter()))
        ru1, cpu1, probe1, (busy1, w1) = (
            resource.getrusage(resource.RUSAGE_SELF),
            service.cpu_seconds(),
            {name: f() for name, f in probes.items()},
            system_cpu(),
        )
    finally:
        stop.set()
        ready.abort()  # releases threads still setting up (never after set_window ran)
        for t in threads:
            t.join(timeout=35)
    wall = w1 - w0
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    probe_s = {name: probe1[name] - probe0[name] for name in probes}
    return {
        "full": full,
        "parts": dict(parts),
        "errors": errors,
        "rate": len(full) / seconds,
        "client_cpu_pct": 100 * client_cpu / wall,
        "client_cpu_s": client_cpu,
        "service_cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "service_cpu_s": cpu1 - cpu0,
        "probe_s": probe_s,
        "probe_pct": {name: 100 * s / wall for name, s in probe_s.items()},
        "others_pct": 100
        * ((busy1 - busy0) - client_cpu - (cpu1 - cpu0) - sum(probe_s.values()))
        / wall,
    }


def drive(
    port: int,
    concurrency: int,
    seconds: float,
    warmup: float,
    service: Service,
    username: str,
    password: str,
    probes: Probes | None = None,
) -> dict:
    """C client threads repeat sign_in_once for warmup+seconds (drive_ops); the result has
    the GET and POST latencies as "get" and "post"."""

    def make_op(_: int) -> Op:
        def op() -> tuple[str | None, dict[str, float]]:
            err, t_get, t_post = sign_in_once(port, username, password)
            return err, {"get": t_get, "post": t_post}

        return op

    load = drive_ops(concurrency, seconds, warmup, service, make_op, probes)
    load["get"] = load["parts"].get("get", [])
    load["post"] = load["parts"].get("post", [])
    return load


# ---------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    """q-th percentile in ms (nearest rank); nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return 1000 * s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]
