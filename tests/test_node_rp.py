"""A relying party not written in Python: openid-client (npm) in tests/rp-node/rp.mjs does
discovery, the code flow with PKCE, state and nonce, the ID token's checks, userinfo and a
refresh against the provider over HTTPS, trusting the test CA as an app would."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from oidc_rp import CALLBACK, Person, idp, idp_settings, register

__all__ = ["idp", "idp_settings"]  # the fixtures

RP_DIR = Path(__file__).parent / "rp-node"
TIMEOUT = 60


def _node() -> str:
    node = shutil.which("node")
    if not node:
        pytest.fail("node not found: run `make test-deps` (installs nodejs and npm)")
    if not (RP_DIR / "node_modules" / "openid-client" / "package.json").is_file():
        pytest.fail(f"openid-client not installed in {RP_DIR}: run `make test-deps`")
    return node


class NodeRP:
    """rp.mjs as a subprocess: JSON lines on stdout, the callback URL on stdin."""

    def __init__(self, env: dict, stderr_path: Path):
        self.stderr_path = stderr_path
        self.stderr = stderr_path.open("w")
        self.proc = subprocess.Popen(
            [_node(), str(RP_DIR / "rp.mjs")],
            cwd=RP_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _why(self) -> str:
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return f"rp.mjs (exit status {self.proc.poll()}): {self.stderr_path.read_text()}"

    def read(self) -> dict:
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no answer from rp.mjs in {TIMEOUT} s; {self._why()}")
        if line is None:
            pytest.fail(self._why())
        return json.loads(line)

    def send(self, line: str):
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pytest.fail(self._why())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)  # stdout at its end: the process is gone
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            if not stream.closed:
                stream.close()


def test_openid_client_from_npm_signs_in_reads_userinfo_and_refreshes(idp, tmp_path):
    registered = register(idp, "node-app", redirect_uris=[CALLBACK])
    env = {
        **os.environ,
        "ISSUER": idp.url,
        "CLIENT_ID": registered.client_id,
        "CLIENT_SECRET": registered.secret,
        "REDIRECT_URI": CALLBACK,
        "NODE_EXTRA_CA_CERTS": idp.ca,
    }
    rp = NodeRP(env, tmp_path / "rp-node.stderr")
    try:
        url = rp.read()["authorization_url"]
        assert url.startswith(f"{idp.url}/authorize?"), url

        person = Person(idp)
        page = person.open(url)
        page = person.sign_in(page)
        assert page.status_code == 200 and "Allow" in page.text, (page.status_code, page.final)
        page = person.submit(page, {"decision": "allow"})
        assert page.final.startswith(f"{CALLBACK}?"), (page.status_code, page.final)

        rp.send(page.final)
        result = rp.read()
        assert rp.proc.wait(timeout=TIMEOUT) == 0, rp._why()
    finally:
        rp.close()

    claims, userinfo = result["id_token_claims"], result["userinfo"]
    assert claims["iss"] == idp.url
    assert claims["aud"] == registered.client_id
    assert claims["sub"] and claims["sub"] == userinfo["sub"]
    assert claims["email"] == "alice@example.org"
    assert userinfo["email"] == "alice@example.org"
    assert userinfo["preferred_username"] == "alice"
    assert result["refresh_rotated"] is True
    assert result["access_token_renewed"] is True
