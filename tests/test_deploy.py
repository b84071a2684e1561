"""The container's entry command, run outside a container (no engine on this machine): with
the Dockerfile's own environment and command, the service migrates an empty database and
serves; and the files the Dockerfile copies are all the service needs."""

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
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    # Logs are JSON lines (the migration's Alembic lines aside).
    app_lines = [line for line in output.splitlines() if line.startswith("{")]
    assert all(json.loads(line)["level"] for line in app_lines)
