"""The container's entry command, run outside a container (no engine on this machine): with
the Dockerfile's own environment and command, the service migrates an empty database,
creates the first administrator and serves; and the files the Dockerfile copies are all the
service needs."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from ports import listen_port

ROOT = Path(__file__).resolve().parent.parent


def dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    """The Dockerfile's ENV values, its CMD and the paths it copies."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        env.update(dict(pair.split("=", 1) for pair in line.split()))
    (cmd,) = re.findall(r"^CMD (\[.+\])$", text, re.M)
    copied = [p for line in re.findall(r"^COPY (.+)$", text, re.M) for p in line.split()[:-1]]
    return env, json.loads(cmd), copied


def test_the_image_copies_every_file_the_service_imports():
    _, cmd, copied = dockerfile()
    for path in copied:
        assert (ROOT / path).exists(), path
    assert "identity/" in copied and "templates/" in copied
    assert (ROOT / cmd[0]).exists() and os.access(ROOT / cmd[0], os.X_OK)


# Runs in a fresh interpreter: records every file under the project that the service
# imports or opens while it starts, migrates an empty database and serves its pages.
RUNTIME_FILES = r"""
import json, os, sys
root = sys.argv[1]
touched = set()

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        touched.add(os.path.abspath(os.fsdecode(args[0])))
    elif event in ("os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
        touched.add(os.path.abspath(os.fsdecode(args[0])))

sys.addaudithook(hook)
import idp
from flask_migrate import upgrade
from identity.migration_commands import bind

with idp.app.app_context():
    upgrade(directory=bind(idp.app).directory, x_arg=["quiet=true"])
client = idp.app.test_client()
for path in sys.argv[2:]:
    assert client.get(path, base_url="https://id.example.org").status_code < 500, path
touched |= {os.path.abspath(m.__file__) for m in list(sys.modules.values())
            if getattr(m, "__file__", None)}
print(json.dumps(sorted(os.path.relpath(p, root) for p in touched
                        if p.startswith(root + os.sep))))
"""


def test_the_image_copies_what_the_service_reads_at_runtime(tmp_path):
    """Every file under the project that the service imports or opens while starting,
    migrating a new database and serving its pages (templates, the stylesheet, migrations)
    is in a path the Dockerfile copies."""
    env, _, copied = dockerfile()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")} | env
    run_env |= {
        "IDP_SECRET_KEY": secrets.token_hex(32),
        "IDP_ISSUER": "https://id.example.org",
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}",
        "IDP_LOG_LEVEL": "WARNING",
    }
    pages = ["/login", "/register", "/reset", "/static/idp.css", "/healthz", "/readyz"]
    pages += ["/.well-known/openid-configuration", "/jwks.json", "/no-such-page"]
    r = subprocess.run(
        [sys.executable, "-c", RUNTIME_FILES, str(ROOT), *pages],
        cwd=ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    # The virtualenv running the tests is not the project's: .venv, or .venv-3.13 in CI.
    venv = os.path.relpath(sys.prefix, ROOT) + "/"
    needed = [
        p
        for p in json.loads(r.stdout.splitlines()[-1])
        if not p.startswith((".venv/", venv, "tests/")) and "__pycache__" not in p.split("/")
    ]
    for sample in ("identity/static/idp.css", "templates/auth/login.html", "idp.py", "config.py"):
        assert sample in needed, sample  # the recording works
    assert any(p.startswith("identity/migrations/versions/") for p in needed)
    sources = [p.rstrip("/") for p in copied]
    missing = [p for p in needed if not any(p == s or p.startswith(s + "/") for s in sources)]
    assert not missing, f"the Dockerfile does not copy {missing}"


def test_the_entry_command_migrates_and_serves(tmp_path):
    env, cmd, _ = dockerfile()
    port = listen_port()
    run_env = {
        **os.environ,
        **env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        # The container's paths and port, mapped to this machine.
        "IDP_VENV_BIN": str(Path(sys.executable).parent),
        "IDP_BIND": f"127.0.0.1:{port}",
        "IDP_WORKERS": "1",
        "IDP_SECRET_KEY": secrets.token_hex(32),
        "IDP_ISSUER": "https://id.example.org",
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "IDP_METRICS_TOKEN": "m" * 40,
        # The first administrator, as compose.yaml gives it.
        "IDP_ADMIN_USERNAME": "admin",
        "IDP_ADMIN_EMAIL": "admin@example.org",
        "IDP_ADMIN_PASSWORD": "entry-command passphrase 7",
    }
    assert env["IDP_ENV"] == "production" and env["IDP_LOG_FORMAT"] == "json"
    proc = subprocess.Popen(
        [str(ROOT / cmd[0])],
        cwd=ROOT,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        ready = None
        for _ in range(150):
            if proc.poll() is not None:
                break
            try:
                ready = requests.get(
                    f"http://127.0.0.1:{port}/readyz",
                    headers={"X-Forwarded-Proto": "https"},
                    timeout=10,
                )
                break
            except (requests.ConnectionError, requests.Timeout):
                # Not listening yet, or the workers still loading the app (a busy machine).
                time.sleep(0.1)
        assert ready is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"]["ok"] is True
        assert ready.headers["X-Request-ID"]
        discovery = requests.get(
            f"http://127.0.0.1:{port}/.well-known/openid-configuration",
            headers={"X-Forwarded-Proto": "https"},
            timeout=5,
        ).json()
        assert discovery["issuer"] == "https://id.example.org"
        # Metrics are summed over the workers (prometheus_client's multiprocess mode).
        metrics = requests.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={"Authorization": "Bearer " + "m" * 40, "X-Forwarded-Proto": "https"},
            timeout=5,
        )
        assert metrics.status_code == 200
        assert 'idp_request_seconds_count{endpoint="ops.readyz",method="GET"}' in metrics.text
        # gunicorn (the entry command exec'd it: same pid) runs without the admin's password.
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert b"IDP_ADMIN_USERNAME=admin" in environ
        assert not [v for v in environ if v.startswith(b"IDP_ADMIN_PASSWORD=")]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert "created the administrator admin (admin@example.org)" in output
    assert "entry-command passphrase" not in output
    # Logs are JSON lines (the migration's Alembic lines aside).
    app_lines = [line for line in output.splitlines() if line.startswith("{")]
    assert all(json.loads(line)["level"] for line in app_lines)
