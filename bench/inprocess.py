"""CPU per operation inside one process, without a server, sockets or a load generator: the
service's own cost, steadier than rates on a shared machine, and the place to profile.

    .venv/bin/python bench/inprocess.py [-n 600] [--ops healthz,cc,...] [--profile OP]
        [--sort cumulative|tottime] [--root DIR] [--database-url URL]

A fresh SQLite database in a temporary directory (production settings), one account, two
apps (as bench/oidc.py registers them); each operation runs through Flask's test client
(the same WSGI call the server makes) n/3 times in 3 rounds after 50 untimed calls, and the
cheapest round is printed as user+sys CPU milliseconds per operation, with its elapsed time
(wall: CPU plus waiting, for the database above all) and its minor page faults.
`--database-url` (PostgreSQL, say postgresql+psycopg://postgres@127.0.0.1:5432/test)
measures on that database, in a schema of its own that is dropped afterwards. `--profile OP`
then runs cProfile over n calls of OP (its first 60 lines; BENCH_PROFILE_LINES=N for more).
`--root` measures another checkout of the service (a `git worktree` of an older commit, say)
with this virtualenv.

Operations: healthz (a route that does nothing: Flask's floor), discovery, jwks, cc (client
credentials), introspect (an app's own access token), userinfo, refresh (rotating), code
(authorize with a live session + token), getlogin (the login page), signin (GET + POST
/login, argon2id included), verify (argon2id alone, at the app's parameters), ldapsignin
(GET + POST /login as a directory account: slapd is started as bench/ldap_signin.py starts
it, and the service is configured for it, when this operation is asked for).

A benchmark: it prints figures, it never asserts.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import importlib
import io
import json
import os
import pstats
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

SELF = resource.RUSAGE_SELF
HERE = Path(__file__).resolve().parent
FLASK = HERE.parent / ".venv" / "bin" / "flask"
PASSWORD = "correct horse battery staple"
CALLBACK = "https://app.example/callback"
HEADERS = {"X-Forwarded-Proto": "https"}
BASE = "https://localhost"
DEFAULT_OPS = ("healthz", "discovery", "jwks", "cc", "introspect", "userinfo", "refresh", "code")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=600, help="calls per operation (default 600)")
    ap.add_argument("--ops", default=",".join(DEFAULT_OPS))
    ap.add_argument("--profile", help="cProfile this operation afterwards")
    ap.add_argument("--sort", default="cumulative", help="cProfile order (default cumulative)")
    ap.add_argument("--root", default=str(HERE.parent), help="the checkout to measure")
    ap.add_argument("--database-url", help="another database (default: a new SQLite file)")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    tmp = tempfile.mkdtemp(prefix="idp-inprocess-")
    url, drop = f"sqlite:///{tmp}/bench.sqlite3", None
    if args.database_url:
        url, drop = _schema_of_its_own(args.database_url)
    directory = None
    if "ldapsignin" in args.ops or args.profile == "ldapsignin":
        # The measured checkout's identity package first: ldap_signin (through
        # tests/ldap_server.py) imports identity, and would otherwise bring this one's.
        sys.path.insert(0, str(root))
        importlib.import_module("identity")
        from ldap_signin import ldap_env, start_directory

        directory, d, _ = start_directory(Path(tmp) / "slapd")
        os.environ.update(ldap_env(d))
        Operations.ldap_password = d["password"]
    try:
        return _run(args, ap, root, tmp, url)
    finally:
        if drop:
            drop()
        if directory:
            directory.stop()


def _schema_of_its_own(base: str):
    """A URL whose connections use a new schema, and the function that drops it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    schema = f"idp_bench_{secrets.token_hex(5)}"

    def execute(statement: str) -> None:
        engine = create_engine(base, poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(text(statement))
        engine.dispose()

    execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", lambda: execute(
        f'DROP SCHEMA "{schema}" CASCADE'
    )


def _run(args, ap, root: Path, tmp: str, url: str) -> int:
    os.environ.update(
        IDP_ENV="production",
        IDP_SECRET_KEY=secrets.token_urlsafe(32),
        IDP_DATABASE_URL=url,
        IDP_ISSUER=BASE,
        IDP_TOKEN_RATE_LIMIT="100000/second",  # one app carries the whole load
        IDP_PASSWORD_CHECK_RATE_LIMIT="100000/second",  # and one address every sign-in
        PROMETHEUS_MULTIPROC_DIR=tmp,
    )

    def flask(*cmd: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [str(FLASK), "--app", "idp", *cmd],
            cwd=root,
            capture_output=True,
            check=True,
            text=True,
            input=stdin,
        ).stdout

    flask("db", "upgrade")
    flask("keys", "list")
    flask(
        "user",
        "create",
        "--username",
        "bench",
        "--email",
        "bench@example.com",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    web = json.loads(
        flask(
            "client",
            "create",
            "--name",
            "web",
            "--redirect-uri",
            CALLBACK,
            "--skip-consent",
            "--json",
        )
    )
    service = json.loads(
        flask("client", "create", "--name", "svc", "--grant-type", "client_credentials", "--json")
    )
    sys.path.insert(0, str(root))
    from idp import app  # noqa: E402 - after the environment is set

    ops = Operations(app, web, service)
    names = [n.strip() for n in args.ops.split(",") if n.strip()]
    unknown = [n for n in names + ([args.profile] if args.profile else []) if not hasattr(ops, n)]
    if unknown:
        ap.error(f"unknown operations: {unknown}")
    backend = url.split(":")[0]
    rounds = f"cheapest of 3 rounds of {args.n // 3}"
    print(f"{root} on {backend}: user+sys CPU ms per operation, {rounds}; wall: elapsed ms")
    for name in names:
        op = getattr(ops, name)
        for _ in range(50):
            op()
        rounds, walls, faults = [], [], []
        for _ in range(3):
            t0, w0, f0 = os.times(), time.perf_counter(), resource.getrusage(SELF).ru_minflt
            for _ in range(args.n // 3):
                op()
            t1, w1, f1 = os.times(), time.perf_counter(), resource.getrusage(SELF).ru_minflt
            rounds.append(1000 * ((t1.user - t0.user) + (t1.system - t0.system)) / (args.n // 3))
            walls.append(1000 * (w1 - w0) / (args.n // 3))
            faults.append((f1 - f0) / (args.n // 3))
        print(
            f"{name:10s} {min(rounds):7.3f}   (rounds: {' '.join(f'{r:.2f}' for r in rounds)})"
            f"   wall {min(walls):.3f}   page faults {min(faults):.0f}"
        )
    if args.profile:
        op = getattr(ops, args.profile)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.n):
            op()
        profile.disable()
        if os.environ.get("BENCH_PROFILE_FILE"):
            profile.dump_stats(os.environ["BENCH_PROFILE_FILE"])
        out = io.StringIO()
        lines = int(os.environ.get("BENCH_PROFILE_LINES", "60"))
        pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(lines)
        print(out.getvalue())
    return 0


class Operations:
    """Each method is one operation; a failure raises (a benchmark of errors is no benchmark)."""

    def __init__(self, app, web: dict, service: dict):
        from argon2 import PasswordHasher, Type

        self.app, self.web, self.service = app, web, service
        self.browser = app.test_client()
        self.api = app.test_client()
        cfg = app.config
        self.hasher = PasswordHasher(
            time_cost=cfg["ARGON2_TIME_COST"],
            memory_cost=cfg["ARGON2_MEMORY_COST"],
            parallelism=cfg["ARGON2_PARALLELISM"],
            type=Type.ID,
        )
        self.hash = self.hasher.hash(PASSWORD)
        self._sign_in(self.browser)
        self.refresh_token = self._code_flow()["refresh_token"]
        self.access_token = self._code_flow()["access_token"]

    @staticmethod
    def _basic(client: dict) -> str:
        raw = f"{client['client_id']}:{client['client_secret']}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _sign_in(self, browser, username: str = "bench", password: str = PASSWORD) -> None:
        page = browser.get("/login", headers=HEADERS, base_url=BASE)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)
        form = {"csrf_token": token, "username": username, "password": password}
        headers = {**HEADERS, "Referer": f"{BASE}/login"}
        response = browser.post("/login", data=form, headers=headers, base_url=BASE)
        assert response.status_code == 302, response.status_code

    def _token(self, client: dict, form: dict) -> dict:
        headers = {**HEADERS, "Authorization": self._basic(client)}
        response = self.api.post("/token", data=form, headers=headers, base_url=BASE)
        assert response.status_code == 200, response.text
        return response.json

    def _code_flow(self) -> dict:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.web["client_id"],
                "redirect_uri": CALLBACK,
                "scope": "openid profile email",
                "state": "s",
                "nonce": secrets.token_urlsafe(8),
                "code_challenge": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
        response = self.browser.get(f"/authorize?{query}", headers=HEADERS, base_url=BASE)
        assert response.status_code == 302, response.status_code
        location = urllib.parse.urlsplit(response.headers["Location"])
        code = urllib.parse.parse_qs(location.query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        }
        return self._token(self.web, form)

    def healthz(self) -> None:
        assert self.api.get("/healthz", headers=HEADERS, base_url=BASE).status_code == 200

    def cc(self) -> None:
        self._token(self.service, {"grant_type": "client_credentials"})

    def refresh(self) -> None:
        form = {"grant_type": "refresh_token", "refresh_token": self.refresh_token}
        self.refresh_token = self._token(self.web, form)["refresh_token"]

    def userinfo(self) -> None:
        headers = {**HEADERS, "Authorization": f"Bearer {self.access_token}"}
        response = self.api.get("/userinfo", headers=headers, base_url=BASE)
        assert response.status_code == 200, response.text

    def code(self) -> None:
        self._code_flow()

    def discovery(self) -> None:
        response = self.api.get("/.well-known/openid-configuration", headers=HEADERS, base_url=BASE)
        assert response.status_code == 200

    def jwks(self) -> None:
        assert self.api.get("/jwks.json", headers=HEADERS, base_url=BASE).status_code == 200

    def introspect(self) -> None:
        """The web app asks about its own access token."""
        headers = {**HEADERS, "Authorization": self._basic(self.web)}
        form = {"token": self.access_token}
        response = self.api.post("/introspect", data=form, headers=headers, base_url=BASE)
        assert response.status_code == 200 and response.json["active"] is True, response.text

    def getlogin(self) -> None:
        page = self.app.test_client().get("/login", headers=HEADERS, base_url=BASE)
        assert page.status_code == 200

    def signin(self) -> None:
        self._sign_in(self.app.test_client())

    def ldapsignin(self) -> None:
        self._sign_in(self.app.test_client(), "ada", self.ldap_password)

    def verify(self) -> None:
        self.hasher.verify(self.hash, PASSWORD)


if __name__ == "__main__":
    sys.exit(main())
