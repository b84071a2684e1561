"""`make demo`: set up the IdP (`flask --app idp setup`), register the demo app at the IdP
(once), then run the IdP on https://localhost:5000 and the example app (examples/flask_app)
on http://127.0.0.1:5001 together until Ctrl-C, which stops both. On a new database the demo
admin's password is shown last, once both servers listen.

The client secret is shown only once, so the registration is kept in
instance/demo-client.json (git-ignored); when the app is registered but that file is
missing, the secret is rotated.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "idp"]
# DEMO_CLIENT_FILE: elsewhere (the tests run the demo against a database of their own).
CLIENT_FILE = Path(os.environ.get("DEMO_CLIENT_FILE", ROOT / "instance" / "demo-client.json"))
NAME = "demo"


def flask(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 (our own command line, no shell)
        [*FLASK, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def ok(result: subprocess.CompletedProcess) -> dict:
    if result.returncode != 0:
        sys.exit(f"demo: {' '.join(result.args[3:])} failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout)


def setup() -> list[str]:
    """`flask --app idp setup`, reported now, except the demo admin's framed password (a
    new database), which is returned to be shown last, after both servers' start lines."""
    result = subprocess.run(  # noqa: S603 (our own command line, no shell)
        [*FLASK, "setup"], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"demo: flask --app idp setup failed:\n{result.stdout.strip()}")
    lines = result.stdout.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("+-")]
    frame = lines[rules[0] : rules[-1] + 1] if len(rules) >= 2 else []
    if frame:
        lines = lines[: rules[0]] + lines[rules[-1] + 1 :]
    print("\n".join(line for line in lines if line.strip()), flush=True)
    return frame


def registration(base: str) -> dict:
    """The demo app's client_id and client_secret: kept, rotated or newly registered."""
    shown = flask("client", "show", NAME, "--json")
    if shown.returncode != 0 and "no such app" not in shown.stderr:
        ok(shown)  # exits with the error
    if shown.returncode == 0:
        client = json.loads(shown.stdout)
        if f"{base}/callback" not in client["redirect_uris"]:
            print(
                f"demo: warning: {NAME!r} is registered for {client['redirect_uris']}, "
                f"not {base}/callback; `flask --app idp client delete {NAME}` and run again"
            )
        saved = json.loads(CLIENT_FILE.read_text()) if CLIENT_FILE.exists() else {}
        if saved.get("client_id") == client["client_id"] and saved.get("client_secret"):
            print(f"demo: the app {NAME!r} is registered ({client['client_id']})")
            return saved
        print(f"demo: the app {NAME!r} is registered but its secret is unknown: rotating it")
        client["client_secret"] = ok(flask("client", "rotate-secret", NAME, "--json"))[
            "client_secret"
        ]
    else:
        client = ok(
            flask(
                "client",
                "create",
                "--name",
                NAME,
                "--redirect-uri",
                f"{base}/callback",
                "--post-logout-redirect-uri",
                f"{base}/",
                "--backchannel-logout-uri",
                f"{base}/backchannel-logout",
                "--skip-consent",
                "--json",
            )
        )
        print(f"demo: registered the app {NAME!r} ({client['client_id']})")
    CLIENT_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(CLIENT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(client, fh, indent=2)
    return client


def wait_for(addresses, children, timeout: float = 20) -> None:
    """Until both servers accept connections (so that the banner comes after their logs)."""
    deadline = time.monotonic() + timeout
    for address in addresses:
        while time.monotonic() < deadline and all(c.poll() is None for c in children):
            try:
                socket.create_connection((address.hostname, address.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)


def main() -> None:
    port = int(os.environ.get("DEMO_PORT", "5001"))
    base = f"http://127.0.0.1:{port}"
    frame = setup()
    client = registration(base)
    issuer = os.environ.get("IDP_ISSUER", "https://localhost:5000").rstrip("/")
    certs_dir = ROOT / os.environ.get("IDP_CERTS_DIR", "certs")
    env = {
        **os.environ,
        "DEMO_ISSUER": issuer,
        "DEMO_CLIENT_ID": client["client_id"],
        "DEMO_CLIENT_SECRET": client["client_secret"],
        "DEMO_PORT": str(port),
        "DEMO_CA_FILE": str(certs_dir / "ca.pem"),
    }
    # Same process group as this one: Ctrl-C in the terminal reaches all three.
    idp = subprocess.Popen([sys.executable, "idp.py"], cwd=ROOT)  # noqa: S603
    example = subprocess.Popen(  # noqa: S603
        [sys.executable, "examples/flask_app/app.py"], cwd=ROOT, env=env
    )
    children = [idp, example]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    wait_for([urlsplit(issuer), urlsplit(base)], children)
    if frame:
        who = "as admin, with the password below, or an account made at"
    else:
        who = "as admin (its password was shown the first time), or an account made at"
    print(
        f"\ndemo: the IdP is {issuer}, the app is {base}: open {base}/ and press Sign in"
        f"\n      ({who} {issuer}/register). Ctrl-C stops both.\n",
        *frame,
        sep="\n",
        flush=True,
    )
    status = 0
    try:
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        for c in children:
            if c.returncode is not None:
                print(f"demo: {c.args[1]} exited ({c.returncode}): stopping")
                status = 1
    except KeyboardInterrupt:
        pass
    finally:
        for c in children:
            if c.poll() is None:
                c.terminate()
        for c in children:
            try:
                c.wait(timeout=5)
            except subprocess.TimeoutExpired:
                c.kill()
        print("demo: stopped")
    sys.exit(status)


if __name__ == "__main__":
    main()
