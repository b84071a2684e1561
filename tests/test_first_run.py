"""`make run` and `flask setup` on a fresh checkout: the demo admin's password comes last,
framed, with how to change it; a taken port names IDP_PORT. Real processes, as typed."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import requests
from ports import listen_port

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "idp"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours its warning even in a pipe
PASSWORD_LINE = re.compile(r"^\|\s+password: (\S+)\s+\|$")
# What werkzeug and Flask print when the development server starts, after our own lines.
SERVER_START = (
    " * Serving Flask app",
    " * Debug mode",
    "WARNING: This is a development",
    " * Running on",
    "Press CTRL+C",
)


def fresh_env(tmp_path: Path, port: int = 5000) -> dict[str, str]:
    """The environment of a first run: no IDP_* of the caller's, its own database, certs and
    port, cheap argon2 parameters; output unbuffered so that stdout and stderr interleave
    as on a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_DATABASE_URL=f"sqlite:///{tmp_path}/idp.sqlite3",
        IDP_SECRET_KEY="k" * 64,
        IDP_CERTS_DIR=str(tmp_path / "certs"),
        IDP_HOST="127.0.0.1",
        IDP_PORT=str(port),
        IDP_ISSUER=f"https://localhost:{port}",
        IDP_ARGON2_MEMORY_COST="1024",
        IDP_ARGON2_TIME_COST="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def box_at(lines: list[str], end: int) -> list[str]:
    """The framed block whose bottom rule is lines[end]."""
    top = max(i for i in range(end) if lines[i].startswith("+--"))
    assert lines[end].startswith("+--") and lines[top] == lines[end], lines[top : end + 1]
    body = lines[top + 1 : end]
    assert all(line.startswith("|") and line.endswith("|") for line in body), body
    assert len({len(line) for line in lines[top : end + 1]}) == 1, "ragged frame"
    return lines[top : end + 1]


def test_flask_setup_ends_with_the_framed_password_and_how_to_change_it(tmp_path):
    env = fresh_env(tmp_path)
    first = subprocess.run(
        [*FLASK, "setup"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stdout
    lines = [line for line in first.stdout.splitlines() if line.strip()]
    box = box_at(lines, len(lines) - 1)  # the very last lines of the output
    text = "\n".join(box)
    assert "A demo administrator was created" in text and "username: admin" in text
    assert "Sign in at https://localhost:5000/login" in text
    assert "set-password admin --password-stdin" in text
    (password,) = [m.group(1) for line in box if (m := PASSWORD_LINE.match(line))]
    assert first.stdout.count(password) == 1
    # Migrations are one line, not alembic's line per migration.
    assert "created the database (revision " in first.stdout
    assert "alembic" not in first.stdout and "Running upgrade" not in first.stdout

    # The command the box gives works as printed (with `flask` from this environment).
    command = next(line for line in box if "set-password" in line).strip("| ").split()
    assert command[0].endswith("flask") and command[1:3] == ["--app", "idp"], command
    changed = subprocess.run(
        [*FLASK, *command[3:]],
        cwd=ROOT,
        env=env,
        input="a brand new passphrase for admin\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert changed.returncode == 0, changed.stderr
    assert "admin's password is set" in changed.stdout

    # Run again: nothing is created, no password, no frame.
    again = subprocess.run(
        [*FLASK, "setup"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stdout
    assert "+--" not in again.stdout and "password" not in again.stdout
    assert "database" not in again.stdout  # already at the newest revision: nothing to say


def test_make_run_shows_the_password_last_then_listens(tmp_path):
    """`make run` is `python idp.py`: setup, the framed password, then only the server's
    own start lines; and it serves HTTPS with the certificate it made."""
    port = listen_port()
    server = subprocess.Popen(
        [sys.executable, "idp.py"],
        cwd=ROOT,
        env=fresh_env(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any(" * Running on" in line for line in lines):
            assert time.monotonic() < deadline, lines
            line = server.stdout.readline()
            assert line, f"idp.py exited ({server.poll()}):\n" + "".join(lines)
            lines.append(line.rstrip("\n"))
        answer = requests.Session()
        answer.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        r = answer.get(
            f"https://127.0.0.1:{port}/healthz", verify=str(tmp_path / "certs/ca.pem"), timeout=10
        )
        assert r.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
    shown = [ANSI.sub("", line) for line in lines if line.strip()]
    end = max(i for i, line in enumerate(shown) if line.startswith("+--"))
    box = box_at(shown, end)
    assert any(PASSWORD_LINE.match(line) for line in box)
    after = shown[end + 1 :]
    assert after and all(line.startswith(SERVER_START) for line in after), after
    before = shown[: end - len(box) + 1]
    assert any("created the database" in line for line in before), before
    assert any("Trust the local CA once" in line for line in before), before


def test_a_taken_port_is_named_with_idp_port_before_anything_is_set_up(tmp_path):
    port = listen_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        r = subprocess.run(
            [sys.executable, "idp.py"],
            cwd=ROOT,
            env=fresh_env(tmp_path, port),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"port {port} is in use (IDP_PORT): stop the other program" in r.stderr
    suggested = re.search(r"start with IDP_PORT=(\d+) IDP_ISSUER=(\S+) make run$", r.stderr)
    assert suggested, r.stderr
    other = int(suggested.group(1))
    assert other != port and suggested.group(2) == f"https://localhost:{other}"
    assert "Traceback" not in r.stderr and "Address already in use" not in r.stderr
    # Said before setup: no password shown, no certificate made, no table created.
    assert r.stdout == "" and not (tmp_path / "certs").exists()
    # closing(): sqlite3's own context manager commits but leaves the connection open
    # (Python 3.13 warns when such a connection is collected, in whichever test that is).
    with closing(sqlite3.connect(tmp_path / "idp.sqlite3")) as database:
        assert database.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_make_demo_shows_the_password_after_both_servers_start(tmp_path):
    """`make demo` on a fresh checkout: setup, both servers' logs, then the banner and the
    framed password, last; the app's registration is kept where DEMO_CLIENT_FILE says."""
    idp_port, app_port = listen_port(), listen_port()
    env = {
        **fresh_env(tmp_path, idp_port),
        "DEMO_PORT": str(app_port),
        "DEMO_CLIENT_FILE": str(tmp_path / "demo-client.json"),
    }
    demo = subprocess.Popen(
        [sys.executable, "examples/run_demo.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        # The banner, then the frame: its bottom rule is the second rule after the banner.
        while sum(line.startswith("+--") for line in lines) < 2 or not any(
            line.startswith("demo: the IdP is") for line in lines
        ):
            assert time.monotonic() < deadline, lines
            line = demo.stdout.readline()
            assert line, f"run_demo.py exited ({demo.poll()}):\n" + "".join(lines)
            lines.append(ANSI.sub("", line.rstrip("\n")))
    finally:
        demo.terminate()  # run_demo stops both servers on SIGTERM
        demo.wait(timeout=30)
        demo.stdout.close()
    banner = next(i for i, line in enumerate(lines) if line.startswith("demo: the IdP is"))
    assert "as admin, with the password below" in lines[banner + 1]
    end = max(i for i, line in enumerate(lines) if line.startswith("+--"))
    box = box_at(lines, end)
    assert end - len(box) + 1 > banner, "the frame comes after the banner"
    assert any(PASSWORD_LINE.match(line) for line in box)
    before = "\n".join(lines[:banner])
    assert "created the database" in before and " * Running on" in before
    assert (tmp_path / "demo-client.json").exists()


def test_make_run_in_debug_mode_sets_up_once_and_serves(tmp_path):
    """IDP_DEBUG=true: werkzeug's reloader runs idp.py again in a child that inherits the
    listening socket; the child neither checks the port (the parent holds it) nor sets up
    or shows the password again."""
    port = listen_port()
    server = subprocess.Popen(
        [sys.executable, "idp.py"],
        cwd=ROOT,
        env={**fresh_env(tmp_path, port), "IDP_DEBUG": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the reloader's child too is stopped with the group
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any("Debugger is active" in line for line in lines):
            assert time.monotonic() < deadline, lines
            line = server.stdout.readline()
            assert line, f"idp.py exited ({server.poll()}):\n" + "".join(lines)
            lines.append(ANSI.sub("", line.rstrip("\n")))
        answer = requests.Session()
        answer.trust_env = False
        r = answer.get(
            f"https://127.0.0.1:{port}/healthz", verify=str(tmp_path / "certs/ca.pem"), timeout=10
        )
        assert r.status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
        server.stdout.close()
    output = "\n".join(lines)
    assert output.count("password: ") == 1 and output.count("Trust the local CA") == 1
    assert "in use" not in output and "Traceback" not in output
