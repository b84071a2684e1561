"""The production server as a process (`make serve`'s command, deploy/entrypoint.sh): clients
that send their request slowly do not stop it answering others; its settings are checked at
start with one line; the metrics directory it makes is removed when it stops."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from ldap_server import blackhole, slowed
from ports import listen_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# "Stalled": far above any answer on a loaded machine, far below the 30 s a slow client may
# hold its socket.
STALLED = 15
HTTPS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1"}


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "PROMETHEUS_"))}
    return env | {
        "IDP_VENV_BIN": str(BIN),
        "IDP_ENV": "production",
        "IDP_SECRET_KEY": secrets.token_hex(32),
        "IDP_ISSUER": "https://id.example.org",
        "IDP_TRUSTED_PROXIES": "1",
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}",
        "IDP_LOG_FORMAT": "json",
        **extra,
    }


def start(env: dict[str, str]) -> subprocess.Popen:
    """deploy/entrypoint.sh, what `make serve` runs (migrations, then the server)."""
    return subprocess.Popen(
        [str(ROOT / "deploy" / "entrypoint.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_ready(proc: subprocess.Popen, port: int, workers: int) -> None:
    answered = 0
    for _ in range(600):
        assert proc.poll() is None, proc.stdout.read()
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=STALLED)
            answered += 1
            if answered > 4 * workers:  # every worker has loaded the app by now
                return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    raise AssertionError("the server never answered")


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    return output


@pytest.fixture
def server(tmp_path):
    port = listen_port()
    proc = start(serve_env(tmp_path, IDP_BIND=f"127.0.0.1:{port}", IDP_WORKERS="2"))
    try:
        wait_ready(proc, port, 2)
        yield port
    finally:
        stop(proc)


@contextmanager
def one_worker(tmp_path: Path, **settings: str) -> Iterator[int]:
    """`make serve` with one worker and `settings`; yields its port. Its output, once it has
    stopped, holds no traceback."""
    port = listen_port()
    proc = start(serve_env(tmp_path, IDP_BIND=f"127.0.0.1:{port}", IDP_WORKERS="1", **settings))
    try:
        wait_ready(proc, port, 1)
        yield port
    finally:
        output = stop(proc)
    assert "Traceback" not in output


def slow_client(port: int, start: bytes) -> socket.socket:
    """A connection that sent the start of a request and holds the rest back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(start)
    return s


def test_slow_clients_do_not_stall_other_requests(server):
    port = server
    partial_headers = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: a"
    partial_body = (
        b"POST /token HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
        b"grant_type=client_cred"
    )
    # Four times as many slow clients as workers: each of gunicorn's sync workers took one
    # and waited for the rest of it, and nobody else got an answer.
    partial_chunks = (
        b"POST /token HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n5\r\ngrant\r\n"
    )
    slow = [slow_client(port, partial_headers) for _ in range(8)]
    slow += [slow_client(port, partial_body) for _ in range(8)]
    slow += [slow_client(port, partial_chunks) for _ in range(8)]
    try:
        for s in slow:  # one more byte each, as a client dribbling its request
            s.sendall(b"b")
        base = f"http://127.0.0.1:{port}"
        for _ in range(5):
            answer_others(base)
            chunked = requests.post(  # a body of unknown length, sent whole
                f"{base}/token",
                data=iter([b"grant_type=", b"client_credentials"]),
                headers={**HTTPS, "Content-Type": "application/x-www-form-urlencoded"},
                auth=("nobody", "wrong"),
                timeout=STALLED,
            )
            assert chunked.status_code == 401 and chunked.json()["error"] == "invalid_client"
        too_long = requests.post(
            f"{base}/token",
            data=iter([b"grant_type=client_credentials&x=", b"x" * 70_000]),
            headers={**HTTPS, "Content-Type": "application/x-www-form-urlencoded"},
            timeout=STALLED,
        )
        assert too_long.status_code == 413
    finally:
        for s in slow:
            s.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"IDP_BIND": "8000"},
            "IDP_BIND must be host:port (127.0.0.1:8000, [::1]:8000), not '8000'",
        ),
        ({"IDP_BIND": "0.0.0.0:99999"}, "IDP_BIND must be host:port"),
        ({"IDP_BIND": "local host:8000"}, "IDP_BIND must be host:port"),
        ({"IDP_BIND": "::1:8000"}, "IDP_BIND must be host:port"),
        ({"IDP_WORKERS": "-1"}, "IDP_WORKERS must be a whole number from 1 to 256"),
        ({"IDP_WORKERS": "two"}, "IDP_WORKERS must be a whole number from 1 to 256"),
        ({"IDP_TRUSTED_PROXIES": "0"}, "IDP_TRUSTED_PROXIES is 0: the server speaks plain HTTP"),
    ],
)
def test_bad_settings_stop_the_start_with_one_line(tmp_path, extra, message):
    r = subprocess.run(
        [sys.executable, "-m", "identity.serve"],
        cwd=ROOT,
        env=serve_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.startswith(f"idp: configuration error: {message}"), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_a_retired_gunicorn_setting_is_named(tmp_path):
    port = listen_port()
    env = serve_env(
        tmp_path, IDP_BIND=f"127.0.0.1:{port}", IDP_WORKERS="1", IDP_FORWARDED_ALLOW_IPS="*"
    )
    proc = start(env)
    try:
        wait_ready(proc, port, 1)
    finally:
        output = stop(proc)
    assert "IDP_FORWARDED_ALLOW_IPS is no longer read: IDP_TRUSTED_PROXIES" in output


def test_the_metrics_directory_it_made_is_removed_when_it_stops(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = listen_port()
    token = "m" * 40
    env = serve_env(
        tmp_path,
        TMPDIR=str(scratch),
        IDP_BIND=f"127.0.0.1:{port}",
        IDP_WORKERS="2",
        IDP_METRICS_TOKEN=token,
    )
    proc = start(env)
    try:
        wait_ready(proc, port, 2)
        made = [p.name for p in scratch.iterdir() if p.name.startswith("idp-metrics-")]
        assert len(made) == 1, made
        # Summed over both workers: every /healthz of wait_ready is counted once.
        metrics = requests.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={"Authorization": f"Bearer {token}", **HTTPS},
            timeout=STALLED,
        ).text
        assert 'idp_request_seconds_count{endpoint="ops.healthz",method="GET"} 9.0' in metrics
    finally:
        stop(proc)
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("idp-metrics-")]


def test_bodies_are_read_side_by_side_and_the_app_runs_one_request_at_a_time():
    """OneAtATime alone: 8 threads, each request's body read before the lock; inside the
    app there is never a second request."""
    import io
    import threading

    from identity.one_at_a_time import OneAtATime

    inside, most, seen = 0, 0, []
    guard = threading.Lock()

    def app(environ, start_response):
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        seen.append(environ["wsgi.input"].read())
        time.sleep(0.001)  # give another thread the chance to enter, were it allowed
        with guard:
            inside -= 1
        start_response("200 OK", [])
        return iter([b"a", b"b"])

    wrapped = OneAtATime(app, max_body=10)
    answers = []

    def call(i: int) -> None:
        body = f"body{i}".encode()
        environ = {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
        answers.append(wrapped(environ, lambda *_: None))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1
    assert sorted(seen) == sorted(f"body{i}".encode() for i in range(8))
    assert answers == [[b"a", b"b"]] * 8
    # A body over the limit is left unread, for the app to refuse from its header.
    big = io.BytesIO(b"x" * 11)
    wrapped({"CONTENT_LENGTH": "11", "wsgi.input": big}, lambda *_: None)
    assert seen[-1] == b"x" * 11 and big.tell() == 11  # read by the app, not before


def test_a_wait_elsewhere_lets_go_of_the_worker_unless_the_transaction_holds_locks(app):
    """waiting_elsewhere() inside the app under OneAtATime: the lock is let go (another
    request could run) after reads, kept after a write or a SELECT ... FOR UPDATE until the
    transaction ends: a request waiting on those rows would hold the lock for ever."""
    from sqlalchemy import select
    from werkzeug.test import Client

    from identity import audit
    from identity.database import holds_locks
    from identity.extensions import db
    from identity.models import User
    from identity.one_at_a_time import MAX_WAITING, OneAtATime, waiting_elsewhere

    free: dict[str, bool] = {}

    def probe(what: str):
        if what == "write":
            audit.insert("test.probe")
        elif what == "lock":
            db.session.execute(select(User).with_for_update())
        elif what == "committed":
            audit.insert("test.probe")
            db.session.commit()
        else:
            db.session.execute(select(User))
        with waiting_elsewhere():
            free[what] = wrapped.lock.acquire(blocking=False)
            if free[what]:
                wrapped.lock.release()
        db.session.rollback()
        return "done"

    app.add_url_rule("/test-probe/<what>", view_func=probe)
    wrapped = OneAtATime(app, 1024, lambda: not holds_locks())
    client = Client(wrapped)
    for what in ("read", "write", "lock", "committed", "read"):
        assert client.get(f"/test-probe/{what}", base_url="https://localhost").status_code == 200
    with app.app_context():
        sqlite = db.engine.dialect.name == "sqlite"
    # SQLite has no row locks: SQLAlchemy sends no FOR UPDATE there, and a read locks nothing.
    assert free == {"read": True, "write": False, "lock": sqlite, "committed": True}
    assert not wrapped.lock.locked()
    # MAX_WAITING requests already wait elsewhere: the next one keeps the lock.
    for _ in range(MAX_WAITING):
        wrapped.waiting.acquire()
    assert client.get("/test-probe/read", base_url="https://localhost").status_code == 200
    assert free["read"] is False


def test_a_sign_in_waits_for_a_place_without_the_worker_or_is_refused_at_once(app, monkeypatch):
    """A sign-in that finds its name's lockout window full of attempts still being checked
    waits for one to end with the worker's lock let go: they may need it to end (their
    directory binds wait without it). When the lock cannot be let go, it is refused as a
    crowd at once, not after holding the worker for QUEUE_SECONDS."""
    from types import SimpleNamespace

    from werkzeug.test import Client

    from identity import throttle as throttling
    from identity.one_at_a_time import MAX_WAITING, OneAtATime

    polls: list[bool] = []

    def poll(seconds: float) -> None:
        free = wrapped.lock.acquire(blocking=False)
        if free:
            wrapped.lock.release()
        polls.append(free)
        throttling.throttle().signin_release("alice")  # an attempt being checked ends

    monkeypatch.setattr(throttling, "time", SimpleNamespace(monotonic=time.monotonic, sleep=poll))

    def attempt() -> str:
        limiter, places = throttling.throttle(), app.config["LOCKOUT_ACCOUNT_FAILURES"]
        for _ in range(places):
            assert limiter.signin_begin("alice") is None
        refusal = limiter.signin_begin("alice")
        for _ in range(places):  # as many are reserved either way
            limiter.signin_release("alice")
        return refusal.message if refusal else "reserved"

    app.add_url_rule("/test-attempt", view_func=attempt)
    wrapped = OneAtATime(app, 1024)
    client = Client(wrapped)
    answer = client.get("/test-attempt", base_url="https://localhost")
    assert (answer.text, polls) == ("reserved", [True])
    # Every place outside the lock is taken: refused at once, without a poll.
    for _ in range(MAX_WAITING):
        wrapped.waiting.acquire()
    answer = client.get("/test-attempt", base_url="https://localhost")
    assert (answer.text, polls) == (throttling.CROWDED, [True])


def test_a_crowd_of_sign_ins_does_not_stall_the_worker(tmp_path):
    """One worker, 48 password attempts at once: every one is answered. (A version that let
    every hash wait for its turn outside the worker's lock, each keeping its database
    connection, stalled here: the request holding the lock waited for a connection of the
    exhausted pool of 5 + 10. A hash waits for its turn holding the lock now.)"""
    with one_worker(tmp_path, IDP_PASSWORD_CHECK_RATE_LIMIT="100000/second") as port:
        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            answers = list(
                pool.map(lambda i: password_attempt(port, f"nobody{i}", "not this"), range(48))
            )
        assert [a.status_code for a in answers] == [401] * 48, [
            (a.status_code, a.text[:200]) for a in answers if a.status_code != 401
        ]
        assert all("Wrong username or password." in a.text for a in answers)


def test_a_chunked_body_is_read_before_the_app_and_refused_past_the_limit():
    import io

    from identity.one_at_a_time import OneAtATime

    seen = []

    def app(environ, start_response):
        seen.append((environ["CONTENT_LENGTH"], environ["wsgi.input"].read()))
        start_response("200 OK", [])
        return [b""]

    wrapped = OneAtATime(app, max_body=10)
    for body in (b"short", b"x" * 50):
        environ = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(body)}
        wrapped(environ, lambda *_: None)
        assert "HTTP_TRANSFER_ENCODING" not in environ
    # The app sees a length: within the limit the body, past it one byte more (then 413).
    assert seen == [("5", b"short"), ("11", b"x" * 11)]


def run_in_a_worker(tmp_path, script: str, **settings: str) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter, set up as `make serve` sets up a worker (its own
    database, migrated; `settings` added to the environment); it must exit 0."""
    env = serve_env(tmp_path, **settings)
    subprocess.run(
        [str(BIN / "flask"), "--app", "idp", "db", "upgrade"], cwd=ROOT, env=env, check=True,
        capture_output=True,
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out


# Run in a fresh interpreter: the modules a worker has loaded once the app is built and has
# answered the requests of a token path and the sign-in page.
LOADED = """
import sys
from identity.serve import application
application()
from idp import app
client = app.test_client()
headers = {"X-Forwarded-Proto": "https"}
for path in ("/.well-known/openid-configuration", "/jwks.json", "/login", "/healthz"):
    assert client.get(path, headers=headers).status_code == 200, path
token = client.post("/token", data={"grant_type": "client_credentials"}, headers=headers)
assert token.status_code == 401, token.status_code  # no such app: the endpoint ran
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""
# Needed only by what a request may never ask of this worker, or only by a command: loaded
# on first use (sizes: resident memory each adds to a worker, measured with bench/memory.py's
# method).
NOT_AT_START = {
    "zxcvbn": "the common-password lists, for a new password (12 MB)",
    "flask_migrate": "migrations, for `flask db` and `flask setup` (11 MB with alembic)",
    "alembic": "migrations",
    "redis": "the Redis client, when IDP_REDIS_URL is set (7 MB)",
    "webauthn": "passkeys, for their ceremonies (4 MB)",
    "segno": "QR codes, drawn at an authenticator app's enrolment (1.2 MB)",
    "OpenSSL": "pyOpenSSL, which checks `make run`'s certificate chain (0.8 MB)",
    "pyasn1": "the directory's password-policy answers, read by the LDAP connector (1.2 MB)",
    "ldap3": "the directory client, when IDP_LDAP_URL is set (5 MB)",
    "requests": "HTTP to social and upstream providers, and back-channel logouts (5 MB)",
    "flask_dance": "the social providers' dance, when one is configured",
    "oauthlib": "the social providers' OAuth 2.0 client",
    "requests_oauthlib": "the social providers' OAuth 2.0 client",
}
# What a configured connector needs, loaded in a worker at start then.
CONNECTORS = {
    "google": (
        {"IDP_GOOGLE_OAUTH_CLIENT_ID": "id", "IDP_GOOGLE_OAUTH_CLIENT_SECRET": "secret"},
        {"flask_dance", "oauthlib", "requests"},
    ),
    "ldap": (
        {
            "IDP_LDAP_URL": "ldaps://ldap.example.org",
            "IDP_LDAP_USER_DN_TEMPLATE": "uid={username},ou=people,dc=example,dc=org",
            "IDP_LDAP_ANONYMOUS_SEARCH": "true",
            "IDP_PASSWORD_CONNECTORS": "local,ldap",
        },
        {"ldap3", "pyasn1"},
    ),
    "upstream": (
        {
            "IDP_OIDC_UPSTREAMS": '[{"id": "corp", "issuer": "https://login.example.com", '
            '"client_id": "id", "client_secret": "secret", "label": "Corp"}]'
        },
        {"requests"},
    ),
}


def test_a_worker_does_not_load_what_only_some_requests_or_commands_need(tmp_path):
    out = run_in_a_worker(tmp_path, LOADED)
    loaded = set(out.stdout.split())
    assert {name: why for name, why in NOT_AT_START.items() if name in loaded} == {}


# Run in a fresh interpreter: what the collector still walks once a worker is built.
COLLECTED = """
import gc
from identity.serve import application
application()
print(gc.get_freeze_count(), sum(gc.get_count()), len(gc.get_objects()))
"""


def test_a_worker_leaves_what_it_made_at_start_out_of_garbage_collections(tmp_path):
    """A full collection walks every object it tracks: the app's and its modules' (about
    100,000) live as long as the worker, and walking them stalled a request 30-60 ms every
    few thousand requests (bench/inprocess.py's operations, gc.callbacks)."""
    frozen, pending, tracked = map(int, run_in_a_worker(tmp_path, COLLECTED).stdout.split())
    assert frozen > 50_000
    assert tracked < frozen / 10  # made after the freeze: the few objects of the last lines
    assert pending < 1_000


@pytest.mark.parametrize("kind", sorted(CONNECTORS))
def test_a_worker_loads_what_a_configured_connector_needs(tmp_path, kind):
    settings, needed = CONNECTORS[kind]
    out = run_in_a_worker(tmp_path, LOADED, **settings)
    assert needed - set(out.stdout.split()) == set()


# Run in a fresh interpreter: whether a block taken by another thread after application()
# comes from the main heap (brk, "[heap]" in /proc/self/maps) or from a heap of its own.
SHARED_HEAP = """
import ctypes, threading
from identity.serve import application
application()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
taken = []
thread = threading.Thread(target=lambda: taken.append(libc.malloc(4096)))
thread.start()
thread.join()
with open("/proc/self/maps") as maps:
    heap = [line.split()[0] for line in maps if line.rstrip().endswith("[heap]")]
lo, hi = (int(x, 16) for x in heap[0].split("-"))
print(lo <= taken[0] < hi)
"""


def test_a_workers_threads_share_one_heap(tmp_path):
    """The body-reader threads (identity.one_at_a_time) take their blocks from the worker's
    one heap: glibc would give each thread a heap (arena) of its own, each keeping freed
    blocks resident for that thread alone."""
    out = run_in_a_worker(tmp_path, SHARED_HEAP)
    assert out.stdout.split() == ["True"]


def password_attempt(
    port: int, username: str, password: str, sending: threading.Event | None = None
) -> requests.Response:
    """The login form, filled in and sent (`sending` is set just before the POST)."""
    base = f"http://127.0.0.1:{port}"
    page = requests.get(f"{base}/login", headers=HTTPS, timeout=STALLED)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    # The session cookie is Secure: sent by hand over this plain HTTP (the TLS proxy's side).
    cookie = "; ".join(f"{c.name}={c.value}" for c in page.cookies)
    if sending is not None:
        sending.set()
    return requests.post(
        f"{base}/login",
        data={"csrf_token": token.group(1), "username": username, "password": password},
        headers=HTTPS | {"Referer": f"https://127.0.0.1:{port}/login", "Cookie": cookie},
        allow_redirects=False,
        timeout=60,
    )


def _server_processes(port: int) -> list[int]:
    """The server's main process and workers: the processes started with its IDP_BIND."""
    bind = f"IDP_BIND=127.0.0.1:{port}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if bind in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours to read
    return found


def test_the_workers_keep_argon2s_memory_in_huge_pages(server):
    """deploy/entrypoint.sh starts the server with glibc's malloc asking for transparent huge
    pages (identity/malloc.py): a password check's 19 MiB is then held in 2 MiB pages, which
    makes each verify cheaper. Where the kernel has THP off, only the setting is checked."""
    port = server
    answer = password_attempt(port, "nobody", "not this one")
    assert "Wrong username or password." in answer.text, answer.text
    processes = _server_processes(port)
    assert len(processes) == 3  # the main process and two workers
    for pid in processes:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        tunables = [v for v in environ if v.startswith(b"GLIBC_TUNABLES=")]
        assert tunables and b"glibc.malloc.hugetlb=1" in tunables[0].split(b"=", 1)[1].split(
            b":"
        ), tunables
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    if "[never]" not in thp:
        huge = 0
        for pid in processes:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            huge += int(re.search(r"AnonHugePages:\s+(\d+) kB", rollup).group(1))
        assert huge >= 2048, f"no huge page in the workers ({thp.strip()})"


# Run in a fresh interpreter: a worker's resident memory after an argon2id verify, and then
# once it has been quiet (polled; the deadline only ends a run that never gives it back).
GIVEN_BACK = """
import time
from identity.serve import application
application()
from idp import app
from identity.passwords import verify_password

def rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmRSS:"))

with app.app_context():
    verify_password(None, "a password")
after = rss()
deadline = time.monotonic() + 60
while rss() > after - 15_000_000 and time.monotonic() < deadline:
    time.sleep(0.2)
print(after - rss() > 15_000_000)
"""


def test_a_worker_gives_argon2s_memory_back_once_sign_ins_stop(tmp_path):
    """The 19 MiB block of a verify (identity.malloc) stays resident while sign-ins go on,
    and goes back to the system once the worker has not hashed for a while."""
    out = run_in_a_worker(tmp_path, GIVEN_BACK)
    assert out.stdout.split() == ["True"]


def answer_others(base: str) -> None:
    """Discovery, the token endpoint and /healthz of the server at `base`, each answered."""
    discovery = requests.get(
        f"{base}/.well-known/openid-configuration", headers=HTTPS, timeout=STALLED
    )
    token = requests.post(
        f"{base}/token",
        data={"grant_type": "client_credentials"},
        auth=("nobody", "wrong"),
        headers=HTTPS,
        timeout=STALLED,
    )
    health = requests.get(f"{base}/healthz", timeout=STALLED)
    assert discovery.status_code == 200 and health.status_code == 200
    assert discovery.json()["issuer"] == "https://id.example.org"
    assert token.status_code == 401 and token.json()["error"] == "invalid_client"


def test_a_hanging_directory_holds_its_sign_ins_not_the_worker(tmp_path):
    """One worker; the directory accepts connections and never answers. A sign-in waits on
    it (up to the LDAP timeouts, twice: the connector retries once); meanwhile the same
    worker answers discovery, the token endpoint and /healthz (identity.one_at_a_time lets go
    of its lock while a request waits on the directory). Before, they queued behind it."""
    port = listen_port()
    with blackhole() as silent:
        env = serve_env(
            tmp_path,
            IDP_BIND=f"127.0.0.1:{port}",
            IDP_WORKERS="1",
            IDP_LDAP_URL=silent,
            IDP_LDAP_START_TLS="false",
            IDP_ALLOW_INSECURE_LDAP_PLAINTEXT="true",
            IDP_LDAP_USER_BASE="ou=people,dc=example,dc=org",
            IDP_LDAP_BIND_DN="cn=idp,dc=example,dc=org",
            IDP_LDAP_BIND_PASSWORD="never asked",
            IDP_LDAP_CONNECT_TIMEOUT="5",
            IDP_LDAP_READ_TIMEOUT="5",
        )
        proc = start(env)
        try:
            wait_ready(proc, port, 1)
            sending, answers = threading.Event(), []
            waiting = threading.Thread(
                target=lambda: answers.append(
                    password_attempt(port, "ada", "a password", sending)  # a directory name
                )
            )
            waiting.start()
            assert sending.wait(STALLED)
            time.sleep(0.5)  # the POST reaches the worker and waits on the directory
            base = f"http://127.0.0.1:{port}"
            answer_others(base)
            # Answered while the sign-in still waits on the directory.
            assert waiting.is_alive() and not answers
            waiting.join(60)
            assert answers and answers[0].status_code == 503, answers
            assert "Traceback" not in answers[0].text
        finally:
            output = stop(proc)
    assert "Traceback" not in output


def test_a_crowd_of_one_name_waits_for_the_directory_without_holding_the_worker(
    tmp_path, directory
):
    """One worker; each answer of the directory comes late. Seven sign-ins of one person at
    once: five may be checked at once (LOCKOUT_ACCOUNT_FAILURES), the two others wait for a
    place. They wait without the worker's lock, so the five can come back from the
    directory, give their places back, and all seven sign in. Before, the waiting ones
    looked for a place holding the lock: the five could not come back, and the two were
    refused as a crowd after QUEUE_SECONDS."""
    port = listen_port()
    with slowed(directory.url, 0.2) as far:
        env = serve_env(
            tmp_path,
            IDP_BIND=f"127.0.0.1:{port}",
            IDP_WORKERS="1",
            IDP_LDAP_URL=far,
            IDP_LDAP_START_TLS="false",
            IDP_ALLOW_INSECURE_LDAP_PLAINTEXT="true",
            IDP_LDAP_USER_BASE=directory.people_dn,
            IDP_LDAP_BIND_DN=directory.bind_dn,
            IDP_LDAP_BIND_PASSWORD=directory.bind_password,
        )
        proc = start(env)
        try:
            wait_ready(proc, port, 1)
            password = directory.passwords["ada"]
            with concurrent.futures.ThreadPoolExecutor(7) as pool:
                answers = list(
                    pool.map(lambda _: password_attempt(port, "ada", password), range(7))
                )
            assert [a.status_code for a in answers] == [302] * 7, [
                (a.status_code, a.text[:300]) for a in answers
            ]
        finally:
            output = stop(proc)
    assert "Traceback" not in output


def test_a_hanging_upstream_holds_its_sign_ins_not_the_worker(tmp_path):
    """One worker; an upstream OpenID provider and Google's token endpoint accept connections
    and never answer. Two sign-ins wait on the upstream's discovery, one on Google's token
    exchange (IDP_SOCIAL_TIMEOUT); meanwhile the same worker answers discovery, the token
    endpoint and /healthz. Before, they queued behind them. The sign-ins end with a 504
    page: the provider did not answer in time."""
    port = listen_port()
    with blackhole() as silent:
        upstream = "https://127.0.0.1:" + silent.rsplit(":", 1)[1]
        env = serve_env(
            tmp_path,
            IDP_BIND=f"127.0.0.1:{port}",
            IDP_WORKERS="1",
            IDP_SOCIAL_TIMEOUT="5",
            IDP_GOOGLE_OAUTH_CLIENT_ID="id",
            IDP_GOOGLE_OAUTH_CLIENT_SECRET="secret",
            IDP_GOOGLE_TOKEN_URL=f"{upstream}/token",
            IDP_OIDC_UPSTREAMS=json.dumps(
                [{"id": "corp", "issuer": upstream, "client_id": "id",
                  "client_secret": "secret", "label": "Corp"}]
            ),
        )  # fmt: skip
        proc = start(env)
        try:
            wait_ready(proc, port, 1)
            base = f"http://127.0.0.1:{port}"
            answers: list[requests.Response] = []

            def sign_in() -> None:
                answers.append(requests.get(f"{base}/login/oidc/corp", headers=HTTPS, timeout=60))

            def back_from_google() -> None:
                # Sent to Google with a state, back with a code: the token exchange hangs.
                went = requests.get(
                    f"{base}/login/google", headers=HTTPS, allow_redirects=False, timeout=60
                )
                query = urllib.parse.urlsplit(went.headers["Location"]).query
                # The session cookie is Secure: sent by hand over this plain HTTP.
                cookie = "; ".join(f"{c.name}={c.value}" for c in went.cookies)
                answers.append(
                    requests.get(
                        f"{base}/login/google/authorized",
                        params={"state": urllib.parse.parse_qs(query)["state"][0], "code": "c"},
                        headers=HTTPS | {"Cookie": cookie},
                        timeout=60,
                    )
                )

            waiting = [threading.Thread(target=f) for f in (sign_in, sign_in, back_from_google)]
            for thread in waiting:
                thread.start()
            time.sleep(1)  # all three reach the worker and wait on a provider
            answer_others(base)
            # Answered while the sign-ins still wait on the upstream.
            assert all(thread.is_alive() for thread in waiting) and not answers
            for thread in waiting:
                thread.join(60)
            assert [a.status_code for a in answers] == [504] * 3, [a.text for a in answers]
            assert all("Traceback" not in a.text for a in answers)
        finally:
            output = stop(proc)
    assert "Traceback" not in output


def test_simultaneous_sign_ins_of_one_account_are_all_answered(tmp_path):
    """One worker, 16 right passwords for one account at once (a shared test account, a
    script, a crowd at a kiosk): each goes on to its second step. Each attempt holds a place
    in the account's lockout window (5) from before its hash until after. A version that let
    go of the worker's plain lock during each hash failed here: requests coming back from
    their hash waited for the lock behind new ones, which took places meanwhile; the window
    filled, the worker's 8 waits ran out, and some attempts were refused as a crowd (429).
    They come back first now (identity.one_at_a_time.ReturnsFirst)."""
    password = "a long and unusual admin passphrase"
    with one_worker(
        tmp_path,
        IDP_PASSWORD_CHECK_RATE_LIMIT="100000/second",
        IDP_ADMIN_USERNAME="root",
        IDP_ADMIN_EMAIL="root@example.org",
        IDP_ADMIN_PASSWORD=password,
    ) as port:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: password_attempt(port, "root", password), range(16)))
        # An administrator's second factor is asked next (IDP_MFA_REQUIRED=admins).
        assert [a.status_code for a in answers] == [302] * 16, [
            (a.status_code, re.findall(r"<p[^>]*>([^<]+)<", a.text))
            for a in answers
            if a.status_code != 302
        ]


def test_a_password_hash_holds_its_sign_in_not_the_worker(tmp_path):
    """One worker, hashes made slow (ARGON2_TIME_COST=300: about 3 s each). While a sign-in's
    argon2id runs, the same worker answers discovery, the token endpoint and /healthz
    (identity.one_at_a_time.hashing). Before, they queued behind the hash."""
    with one_worker(tmp_path, IDP_ARGON2_TIME_COST="300") as port:
        sending, answers = threading.Event(), []
        hashing = threading.Thread(
            target=lambda: answers.append(password_attempt(port, "nobody", "not this one", sending))
        )
        hashing.start()
        assert sending.wait(STALLED)
        time.sleep(0.5)  # the POST reaches the worker and its hash starts
        answer_others(f"http://127.0.0.1:{port}")
        # Answered while the sign-in's hash still runs.
        assert hashing.is_alive() and not answers
        hashing.join(60)
        assert answers and answers[0].status_code == 401, answers
        assert "Wrong username or password." in answers[0].text


def test_hashes_run_one_at_a_time_per_worker_and_never_wait_on_each_other():
    """OneAtATime alone, a stand-in hash in hashing(): another request is answered during a
    hash; at most HASHES run at once; a hash that must keep the lock (its transaction holds
    row locks) waits for the turn of one that let it go, which gives the turn back before it
    takes the lock again: both end."""
    from identity.one_at_a_time import HASHES, OneAtATime, hashing

    inside, most, kept_lock = 0, 0, {}
    guard = threading.Lock()

    def app(environ, start_response):
        nonlocal inside, most
        name = threading.current_thread().name
        if environ.get("PATH_INFO") != "/hash":
            start_response("200 OK", [])
            return [b"plain"]
        with hashing():
            with guard:
                inside += 1
                most = max(most, inside)
            if name == "holds-locks":
                kept_lock[name] = not wrapped.lock.acquire(blocking=False)
            time.sleep(0.3)  # the hash
            with guard:
                inside -= 1
        start_response("200 OK", [])
        return [name.encode()]

    wrapped = OneAtATime(app, 10, lambda: threading.current_thread().name != "holds-locks")
    answers = []

    def call() -> None:
        answers.append(wrapped({"CONTENT_LENGTH": "0", "PATH_INFO": "/hash"}, lambda *_: None))

    first = threading.Thread(target=call, name="free-0")
    first.start()
    time.sleep(0.05)  # the first is in its hash
    assert wrapped({"CONTENT_LENGTH": "0", "PATH_INFO": "/"}, lambda *_: None) == [b"plain"]
    assert first.is_alive()  # answered during the hash, not after it
    others = [threading.Thread(target=call, name=n) for n in ("holds-locks", "free-1", "free-2")]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(10)
    assert not any(t.is_alive() for t in [first, *others]), "two hashes wait on each other"
    assert sorted(answers) == sorted([[b"free-0"], [b"holds-locks"], [b"free-1"], [b"free-2"]])
    assert most == HASHES == 1
    assert kept_lock == {"holds-locks": True}  # its hash ran with the lock held
    assert not wrapped.lock.locked()


def test_requests_coming_back_from_a_wait_take_the_lock_before_new_ones():
    """OneAtATime alone: a request that let go of the lock for a wait (waiting_elsewhere)
    takes it back before a request that arrived earlier and has not had it yet; that one
    runs next. With a plain lock, the earlier arrival went first."""
    from identity.one_at_a_time import OneAtATime, waiting_elsewhere

    in_wait, done_waiting, holding = threading.Event(), threading.Event(), threading.Event()
    order = []

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/wait":
            with waiting_elsewhere() as let_go:
                assert let_go
                in_wait.set()
                done_waiting.wait(10)
        elif path == "/hold":
            holding.wait(10)
        order.append(path)
        start_response("200 OK", [])
        return [b""]

    wrapped = OneAtATime(app, 10)

    def call(path: str) -> threading.Thread:
        t = threading.Thread(target=wrapped, args=({"PATH_INFO": path}, lambda *_: None))
        t.start()
        return t

    def until(condition) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    waiting = call("/wait")
    assert in_wait.wait(10)  # it waits elsewhere, the lock let go
    held = call("/hold")
    until(wrapped.lock.locked)
    new = call("/new")  # waits for the lock
    time.sleep(0.1)
    done_waiting.set()  # /wait comes back and waits for the lock too
    until(lambda: len(wrapped.lock._returning) == 1)
    holding.set()
    for t in (waiting, held, new):
        t.join(10)
    assert order == ["/hold", "/wait", "/new"]
    assert not wrapped.lock.locked()


def test_the_returns_first_lock_refuses_a_release_when_free_and_a_try_when_taken():
    from identity.one_at_a_time import ReturnsFirst

    lock = ReturnsFirst()
    with pytest.raises(RuntimeError):
        lock.release()
    assert lock.acquire(blocking=False)
    assert lock.locked()
    assert not lock.acquire(blocking=False)
    assert not lock.acquire(blocking=False, back=True)
    lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()
