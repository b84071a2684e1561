"""Shared pieces of the benchmarks (all.py and its parts, memory.py, servers.py).

The production server (granian) in its own process group, the GET+POST /login client,
client threads repeating an operation over a common window, CPU accounting from /proc, a
timed loop in N processes for the raw ceilings, percentiles. Linux only (/proc).
"""

from __future__ import annotations

import collections
import html
import http.client
import math
import multiprocessing
import os
import re
import resource
import secrets
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


def environ_with_huge_pages(env: dict[str, str]) -> dict[str, str]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from identity.malloc import with_huge_pages as environ_with

    return environ_with(env)


def with_huge_pages() -> None:
    """Start this script again, once, the way deploy/entrypoint.sh starts the server: with
    glibc's malloc on transparent huge pages (identity/malloc.py). The raw argon2id ceiling
    runs in processes forked from this one, and glibc reads the setting only at a start."""
    env = environ_with_huge_pages(dict(os.environ))
    if env["GLIBC_TUNABLES"] != os.environ.get("GLIBC_TUNABLES"):
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


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


def service_env(port: int, database_url: str, **extra: str) -> dict[str, str]:
    """The service's environment: this one without any IDP_* setting, then production
    settings with a random secret key, the issuer on `port`, `database_url`, and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_DATABASE_URL=database_url,
        IDP_SECRET_KEY=secrets.token_hex(32),
        IDP_ENV="production",
        IDP_ISSUER=f"https://localhost:{port}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- CPU


def system_cpu() -> tuple[float, float]:
    """(CPU seconds that processes used on the whole machine, wall seconds), from /proc/stat
    (Linux): user, nice, system, irq. Not idle nor iowait, and not softirq (the kernel's
    loopback TCP work for every connection, charged to no process) nor steal (time the
    hypervisor gave to other machines): kernel_cpu() has those two."""
    fields = _stat_fields()
    tick = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[1] + fields[2] + fields[5]) / tick, time.perf_counter()


def kernel_cpu() -> tuple[float, float]:
    """(softirq, steal) CPU seconds of the whole machine, from /proc/stat."""
    fields = _stat_fields()
    tick = os.sysconf("SC_CLK_TCK")
    return fields[6] / tick, fields[7] / tick


def _stat_fields() -> list[int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields + [0] * (8 - len(fields))


def proc_cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a process (all its threads), from /proc/<pid>/stat; 0 when
    it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def processes_cpu_seconds(match: Callable[[str, str], bool]) -> Callable[[], float]:
    """A probe: user+sys CPU seconds of every process for which match(comm, cmdline) holds,
    e.g. the PostgreSQL backends serving one database. A process that exits inside a window
    takes its CPU with it (the window then shows less)."""

    def probe() -> float:
        total = 0.0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                comm = (entry / "comm").read_text().strip()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if match(comm, cmdline):
                total += proc_cpu_seconds(int(entry.name))
        return total

    return probe


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
        steal0 = kernel_cpu()[1]
        probe0 = {name: f() for name, f in probes.items()}
        time.sleep(max(0.0, start + warmup + seconds - time.perf_counter()))
        sys1, own1 = system_cpu(), sum(proc_cpu_seconds(p.pid) for p in workers)
        steal1 = kernel_cpu()[1]
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
        "steal_pct": 100 * (steal1 - steal0) / wall,
    }


# ---------------------------------------------------------------------------- service


class Service:
    """The production server (`make serve`: granian) in its own process group; stop()
    always ends it (and its workers)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, workers: int = WORKERS):
        self.port = port
        self.workers = workers
        self.log_path = log_path
        if "PROMETHEUS_MULTIPROC_DIR" not in env:
            # identity/serve.py would make one in /tmp for every start (and remove it).
            metrics = log_path.parent / f"metrics-{port}"
            metrics.mkdir(exist_ok=True)
            env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        # The production server, as `make serve` runs it (identity/serve.py, with the
        # GLIBC_TUNABLES of deploy/entrypoint.sh).
        cmd = [str(VENV_BIN / "python"), "-m", "identity.serve"]
        env = {
            **environ_with_huge_pages(env),
            "IDP_BIND": f"127.0.0.1:{port}",
            "IDP_WORKERS": str(workers),
            "IDP_TRUSTED_PROXIES": "1",  # X-Forwarded-Proto: https, as from the TLS proxy
        }
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
                    f"the server exited with {self.proc.returncode} before it was "
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
        raise BenchError(f"the server not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(x) for x in kids.split()]

    def cpu_seconds(self) -> float:
        """user+sys CPU of the master and its workers, from /proc (Linux)."""
        return sum(proc_cpu_seconds(pid) for pid in [self.proc.pid, *self.worker_pids()])

    def worker_rss(self) -> dict[int, int]:
        """Resident memory (VmRSS, bytes) of each worker, from /proc/<pid>/status."""
        rss = {}
        for pid in self.worker_pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            if m:
                rss[pid] = 1024 * int(m.group(1))
        return rss

    def log_summary(self) -> dict:
        """What the server and the app logged: tracebacks (the exception line of each) and the
        other lines, each distinct line with its count."""
        try:
            self._log.flush()
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, ValueError):
            return {"tracebacks": {}, "lines": {}}
        tracebacks: collections.Counter[str] = collections.Counter()
        other: collections.Counter[str] = collections.Counter()
        chained = ("The above exception", "During handling of the above exception")
        more = ("[SQL:", "[parameters:", "(Background on this error", "DETAIL:", "HINT:")
        i, n = 0, len(lines)
        while i < n:
            line = lines[i]
            i += 1
            if not line.startswith("Traceback (most recent call last)"):
                if line.strip() and not line.startswith(" "):
                    other[line.strip()] += 1
                continue
            last = "(truncated)"
            while True:  # one chain of tracebacks: counted once, by its last exception
                while i < n and (lines[i].startswith(" ") or not lines[i].strip()):
                    i += 1
                if i < n:
                    last = lines[i].strip()
                    i += 1
                while i < n and (not lines[i].strip() or lines[i].startswith(more + chained)):
                    i += 1
                if i < n and lines[i].startswith("Traceback (most recent call last)"):
                    i += 1
                    continue
                break
            tracebacks[last] += 1
        return {"tracebacks": dict(tracebacks), "lines": dict(other)}

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
    """One request on a new connection (as most clients of an IdP do: one token request each)."""
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


def own_cpu_seconds() -> float:
    """user+sys CPU seconds of this process, all its threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CpuWindow:
    """CPU (user+sys) of the load generator (this process, or `generator()`), the service,
    each probe, and the rest of the machine, from creation to stop()."""

    def __init__(
        self,
        service: Service,
        probes: Probes | None = None,
        generator: Callable[[], float] = own_cpu_seconds,
    ):
        self.service, self.probes, self.generator = service, probes or {}, generator
        self.before = self._sample()

    def _sample(
        self,
    ) -> tuple[float, float, dict[str, float], tuple[float, float], tuple[float, float]]:
        return (
            self.generator(),
            self.service.cpu_seconds(),
            {name: f() for name, f in self.probes.items()},
            system_cpu(),
            kernel_cpu(),
        )

    def stop(self) -> dict:
        gen0, svc0, probe0, (busy0, w0), (soft0, steal0) = self.before
        gen1, svc1, probe1, (busy1, w1), (soft1, steal1) = self._sample()
        wall = w1 - w0
        client_cpu, svc = gen1 - gen0, svc1 - svc0
        probe_s = {name: probe1[name] - probe0[name] for name in self.probes}
        return {
            "client_cpu_pct": 100 * client_cpu / wall,
            "client_cpu_s": client_cpu,
            "service_cpu_pct": 100 * svc / wall,
            "service_cpu_s": svc,
            "probe_s": probe_s,
            "probe_pct": {name: 100 * s / wall for name, s in probe_s.items()},
            "others_pct": 100 * ((busy1 - busy0) - client_cpu - svc - sum(probe_s.values())) / wall,
            "softirq_pct": 100 * (soft1 - soft0) / wall,
            "steal_pct": 100 * (steal1 - steal0) / wall,
        }


# One client operation: (error or None, {part name: seconds}) for sub-latencies.
Op = Callable[[], tuple[str | None, dict[str, float]]]


def _measure_window(
    window: dict[str, float], ready: threading.Barrier, service: Service, probes: Probes
) -> dict:
    """Wait until the client threads have set the window up (set_window ran), then measure
    CPU over it (CpuWindow) and return when it ends."""
    while "end" not in window:
        if ready.broken:
            raise BenchError("client setup did not finish in 300 s")
        time.sleep(0.01)
    time.sleep(max(0.0, window["begin"] - time.perf_counter()))
    cpu = CpuWindow(service, probes)
    time.sleep(max(0.0, window["end"] - time.perf_counter()))
    return cpu.stop()


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
        usage = _measure_window(window, ready, service, probes)
    finally:
        stop.set()
        ready.abort()  # releases threads still setting up (never after set_window ran)
        for t in threads:
            t.join(timeout=35)
    return {
        "full": full,
        "parts": dict(parts),
        "errors": errors,
        "rate": len(full) / seconds,
        **usage,
    }


def paced_threads(rate: float, minimum: int, budget: float = 0.1, cap: int = 128) -> int:
    """Client threads for an open-loop run at `rate`: enough that every request of up to
    `budget` seconds finds a free thread (rate x budget in flight), plus a few."""
    return max(minimum, min(cap, math.ceil(rate * budget) + 4))


def drive_paced(
    rate: float,
    threads: int,
    seconds: float,
    warmup: float,
    service: Service,
    make_op: Callable[[int], Op],
    probes: Probes | None = None,
    grace: float | None = None,
) -> dict:
    """Open loop: operation k is due at start + k/rate, whatever happened to the others.
    `threads` client threads (each after its untimed make_op(i), as in drive_ops) take the
    next due operation, wait for its time and run it. Latency is measured from the time it
    was due, not from when it started, so a slow service that delays later starts is
    charged for it (no coordinated omission). Operations due inside the measured window
    count; when they run late, the run goes on past the window until they are done (at most
    `grace` seconds, default max(5, seconds); the rest are counted as errors)."""
    probes = probes or {}
    grace = max(5.0, seconds) if grace is None else grace
    lock = threading.Lock()
    due_lat: list[float] = []  # ok ops due in the window: done - due
    lags: list[float] = []  # start - due, same ops
    done_in_window = 0  # ok ops (any due time) completed inside the window
    errors: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    window: dict[str, float] = {}
    counter = [0]

    def set_window() -> None:
        start = time.perf_counter() + 0.05
        window["start"], window["begin"] = start, start + warmup
        window["end"] = start + warmup + seconds

    ready = threading.Barrier(threads, action=set_window)

    def client(i: int) -> None:
        nonlocal done_in_window
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
        start, begin, end = window["start"], window["begin"], window["end"]
        while op is not None and not stop.is_set():
            with lock:
                k = counter[0]
                counter[0] += 1
            due = start + k / rate
            if due >= end:
                return
            now = time.perf_counter()
            if now > end + grace:
                if due >= begin:
                    with lock:
                        errors[f"not started within {grace:g} s after the window"] += 1
                continue
            if due > now:
                time.sleep(due - now)
            t0 = time.perf_counter()
            try:
                err, _ = op()
            except Exception as exc:  # noqa: BLE001 - every failure is a figure, not a crash
                err = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter()
            with lock:
                if not err and begin <= t1 <= end:
                    done_in_window += 1
                if due >= begin:
                    if err:
                        errors[err] += 1
                    else:
                        due_lat.append(t1 - due)
                        lags.append(t0 - due)

    pool = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    try:
        usage = _measure_window(window, ready, service, probes)
        deadline = window["end"] + grace + 35
        for t in pool:
            t.join(timeout=max(0.0, deadline - time.perf_counter()))
    finally:
        stop.set()
        ready.abort()
        for t in pool:
            t.join(timeout=35)
    return {
        "rate_target": rate,
        "threads": threads,
        "full": due_lat,
        "lag": lags,
        "errors": errors,
        "rate": done_in_window / seconds,  # achieved: ok completions inside the window
        "due": len(due_lat) + sum(errors.values()),
        **usage,
    }


def _split_child(
    make_op: Callable[[int], Op],
    first: int,
    threads: int,
    ready,
    go,
    start_at,
    warmup: float,
    seconds: float,
    out,
) -> None:
    """One load-generator process of drive_split: `threads` closed-loop client threads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    lat: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    ops: list[Op] = []
    for i in range(threads):
        try:
            ops.append(make_op(first + i))
        except Exception as exc:  # noqa: BLE001 - a failure is a figure, not a crash
            errors[f"setup: {type(exc).__name__}: {exc}"] += 1
    ready.wait(timeout=300)
    go.wait(timeout=300)
    begin = start_at.value + warmup
    end = begin + seconds

    def client(op: Op) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                err, _ = op()
            except Exception as exc:  # noqa: BLE001
                err = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter()
            if begin <= t1 <= end:
                with lock:
                    if err:
                        errors[err] += 1
                    else:
                        lat.append(t1 - t0)

    pool = [threading.Thread(target=client, args=(op,)) for op in ops]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((lat, errors))


def drive_split(
    procs: int,
    concurrency: int,
    seconds: float,
    warmup: float,
    service: Service,
    make_op: Callable[[int], Op],
    probes: Probes | None = None,
) -> dict:
    """drive_ops with the load generator split over `procs` forked processes (concurrency
    threads in all), to check that one generator process does not hold the service back.
    perf_counter is CLOCK_MONOTONIC, one clock for all processes: they share the window.
    The generator's CPU is that of the child processes."""
    ctx = multiprocessing.get_context("fork")  # make_op is a closure: no pickling
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    per = [n for n in per if n]
    ready, go = ctx.Barrier(len(per) + 1), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    q: multiprocessing.Queue = ctx.Queue()
    children = []
    first = 0
    for n in per:
        children.append(
            ctx.Process(
                target=_split_child,
                args=(make_op, first, n, ready, go, start_at, warmup, seconds, q),
                daemon=True,
            )
        )
        first += n
    for c in children:
        c.start()
    lat: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    try:
        ready.wait(timeout=300)
        start_at.value = time.perf_counter() + 0.1
        go.set()
        begin = start_at.value + warmup
        time.sleep(max(0.0, begin - time.perf_counter()))
        pids = [c.pid for c in children]
        cpu = CpuWindow(service, probes, generator=lambda: sum(proc_cpu_seconds(p) for p in pids))
        time.sleep(max(0.0, begin + seconds - time.perf_counter()))
        usage = cpu.stop()
        for _ in children:
            part, part_errors = q.get(timeout=60)
            lat += part
            errors.update(part_errors)
    except BaseException:
        for c in children:
            c.terminate()
        raise
    finally:
        for c in children:
            c.join(timeout=10)
            if c.is_alive():
                c.terminate()
    return {
        "procs": len(per),
        "full": lat,
        "errors": errors,
        "rate": len(lat) / seconds,
        **usage,
    }


# ---------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    """q-th percentile in ms (nearest rank); nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return 1000 * s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def wide_figures(run: dict, threads: int) -> dict | None:
    """The figures of the run with --wide threads, or None when there was none."""
    wide = run.get("wide")
    if wide is None:
        return None
    ok = len(wide["full"])
    return {
        "threads": threads,
        "ops_per_s": wide["rate"],
        "p50_ms": pct(wide["full"], 50),
        "p99_ms": pct(wide["full"], 99),
        "svc_ms_per_op": 1000 * wide["service_cpu_s"] / ok if ok else None,
        "gen_cpu_pct": wide["client_cpu_pct"],
        "svc_cpu_pct": wide["service_cpu_pct"],
        "other_cpu_pct": wide["others_pct"] + (wide.get("steal_pct") or 0),
        "ok": ok,
        "errors": sum(wide["errors"].values()),
    }


def top_errors(run: dict) -> list[list]:
    """The 3 most frequent errors of each of a row's runs, those of the run with --wide
    threads marked "wide:", those of the half-rate run "half:"."""
    return [
        [f"{label}{err}", n]
        for part, label in (("peak", ""), ("wide", "wide: "), ("paced", "half: "))
        if run.get(part) is not None
        for err, n in run[part]["errors"].most_common(3)
    ]


def drop_redis_keys(url: str, prefix: str) -> str:
    """Delete the keys under `prefix` in the Redis at `url`; what was done, as a line
    (never raises: a cleanup step)."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=3)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
        return f"{len(keys)} Redis keys {prefix}* deleted"
    except Exception as exc:  # noqa: BLE001
        return f"deleting Redis keys {prefix}* failed: {exc}"


# ---------------------------------------------------------------------------- slow clients

# As a TLS proxy in front would send them (servers.py, all.py --slow).
HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1"}


def get(port: int, path: str, timeout: float) -> float:
    """One GET on a new connection, raw (HEADERS); seconds until the whole answer was read."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{head}Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise OSError(f"answer {data[:40]!r}")
    return time.perf_counter() - t0


def slow_clients(port: int, count: int, stop_at: float) -> None:
    """`count` connections, each sending one more byte of its request headers per second."""
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"x" * 4000
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            break
    sent = 0
    while time.monotonic() < stop_at and sent < len(request):
        for s in socks:
            try:
                s.send(request[sent : sent + 1])
            except OSError:
                pass
        sent += 1
        time.sleep(max(0.0, min(1.0, stop_at - time.monotonic())))
    for s in socks:
        s.close()


def slow_run(port: int, count: int, seconds: float) -> dict:
    stop_at = time.monotonic() + seconds + 3
    slow = threading.Thread(target=slow_clients, args=(port, count, stop_at))
    slow.start()
    time.sleep(2)  # let them connect and start dribbling
    ok, lat = 0, []
    end = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < end:
        sent += 1
        try:
            lat.append(get(port, "/healthz", 5))
            ok += 1
        except OSError:
            lat.append(5.0)
    slow.join()
    return {"sent": sent, "ok": ok, "p99_ms": pct(lat, 99)}  # pct: milliseconds
