"""all.py's OpenID Connect parts: the service set up for a run (`prepare`: a fresh database,
the signing keys, one account, a confidential web app with code + refresh and a service app
with client credentials, registered with `flask --app idp client create --json`; production
settings), the raw RS256 signing ceiling (joserfc `jwt.encode` of an access token, one
process per core), and each operation's client threads (`Phase`):
- cc: POST /token, client_credentials, client_secret_basic;
- refresh: POST /token, refresh_token; each thread rotates its own chain (from one code flow
  of its own, done before the window);
- code: GET /authorize with a live session (each thread signs in once, before the window) +
  POST /token with the code and the PKCE S256 verifier;
- userinfo: GET /userinfo with a Bearer access token (one per thread).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.parse

from _common import (
    BenchError,
    Op,
    free_port,
    measure_processes,
    request,
    run_flask,
    service_env,
    sign_in_session,
    timed_loop,
)

USERNAME = "bench"
EMAIL = "bench@example.com"
PASSWORD = "correct horse battery staple"  # >= 12 characters (password policy)
CALLBACK = "https://app.example/callback"
SCOPE = "openid profile email"
FORM = "application/x-www-form-urlencoded"
SIGN_PROCS = 2
# Issue 8's targets, in operations per second.
TARGETS = {"cc": 1000, "refresh": 400, "code": 250, "userinfo": 1500}


# ---------------------------------------------------------------------------- ceiling


def _sign_worker(
    start: float, warmup: float, seconds: float, out, pem: str, kid: str, iss: str
) -> None:
    from joserfc import jwt
    from joserfc.jwk import KeySet, RSAKey

    # As the service does: the key imported once, a key set of one (joserfc writes its kid).
    keyset = KeySet([RSAKey.import_key(pem, parameters={"kid": kid, "alg": "RS256"})])
    header = {"alg": "RS256", "typ": "at+jwt"}
    client_id = secrets.token_urlsafe(18)

    def sign() -> None:
        now = int(time.time())
        claims = {  # the claims of a client-credentials access token (RFC 9068)
            "iss": iss,
            "exp": now + 600,
            "client_id": client_id,
            "iat": now,
            "jti": secrets.token_urlsafe(12),
            "scope": "",
            "sub": client_id,
            "aud": client_id,
        }
        jwt.encode(header, claims, keyset)

    out.put(timed_loop(sign, start, warmup, seconds))


def measure_signing(seconds: float, warmup: float, iss: str) -> dict:
    """Raw RS256 JWT signatures/s with an RSA 2048 key, one process per core."""
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048)
    pem = key.as_pem(private=True).decode()
    return measure_processes(
        _sign_worker, (pem, key.thumbprint(), iss), SIGN_PROCS, seconds, warmup
    )


# ---------------------------------------------------------------------------- client


class App:
    """A registered app, as `flask --app idp client create --json` printed it."""

    def __init__(self, data: dict):
        self.client_id: str = data["client_id"]
        self.secret: str = data["client_secret"]
        raw = f"{urllib.parse.quote(self.client_id, safe='')}:" + urllib.parse.quote(
            self.secret, safe=""
        )
        self.basic = "Basic " + base64.b64encode(raw.encode()).decode()


def register(env: dict[str, str], name: str, *options: str) -> App:
    out = run_flask(env, ["client", "create", "--name", name, *options, "--json"])
    return App(json.loads(out))


def token_call(
    port: int, app: App, form: dict, path: str = "/token"
) -> tuple[str | None, dict, float]:
    """POST to the token endpoint with client_secret_basic. (error or None, JSON body,
    seconds)."""
    status, text, _, t = request(
        port,
        "POST",
        path,
        {"Authorization": app.basic, "Content-Type": FORM},
        urllib.parse.urlencode(form),
    )
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    if status != 200 or not isinstance(body.get("access_token"), str):
        detail = body.get("error") or text[:80]
        return f"POST /token ({form['grant_type']}) -> {status} {detail}", body, t
    return None, body, t


def code_flow(
    port: int, app: App, cookie: str, authorize: str = "/authorize", token: str = "/token"
) -> tuple[str | None, dict, float, float]:
    """GET /authorize with a signed-in session, then the code at POST /token with PKCE S256
    (the peer's endpoints have other paths). (error or None, token response, authorize
    seconds, token seconds)."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": CALLBACK,
            "scope": SCOPE,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    status, _, msg, t_auth = request(port, "GET", f"{authorize}?{query}", {"Cookie": cookie})
    location = msg.get("Location", "")
    if status not in (302, 303) or not location.startswith(CALLBACK + "?"):
        where = urllib.parse.urlsplit(location).path
        return f"GET {authorize} -> {status} {where}".rstrip(), {}, t_auth, 0.0
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    if params.get("state") != [state] or "code" not in params:
        return f"GET {authorize}: no code ({','.join(params)})", {}, t_auth, 0.0
    err, body, t_token = token_call(
        port,
        app,
        {
            "grant_type": "authorization_code",
            "code": params["code"][0],
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        },
        token,
    )
    if err is None and not ("id_token" in body and "refresh_token" in body):
        err = "POST /token (authorization_code): no id_token or refresh_token"
    return err, body, t_auth, t_token


class Phase:
    """One operation's client threads: make_op(i) is each thread's untimed setup."""

    authorize, token = "/authorize", "/token"  # the peer's (peer_bench.PeerPhase) differ

    def __init__(self, port: int, web: App, service_app: App):
        self.port, self.web, self.service_app = port, web, service_app

    def _sign_in(self) -> str:
        err, cookie, _, _ = sign_in_session(self.port, USERNAME, PASSWORD)
        if err or cookie is None:
            raise BenchError(f"sign-in: {err}")
        return cookie

    def _tokens(self, cookie: str) -> dict:
        err, body, _, _ = code_flow(self.port, self.web, cookie, self.authorize, self.token)
        if err:
            raise BenchError(f"code flow for a token: {err}")
        return body

    def cc(self, _: int) -> Op:
        form = {"grant_type": "client_credentials"}

        def op():
            err, _, _ = token_call(self.port, self.service_app, form, self.token)
            return err, {}

        return op

    def refresh(self, _: int) -> Op:
        cookie = self._sign_in()
        chain = {"token": self._tokens(cookie)["refresh_token"]}

        def op():
            form = {"grant_type": "refresh_token", "refresh_token": chain["token"]}
            err, body, _ = token_call(self.port, self.web, form, self.token)
            if err is None and not body.get("refresh_token"):
                err = "POST /token (refresh_token): no new refresh token"
            if err is None:
                chain["token"] = body["refresh_token"]
            else:  # the chain may be broken: start a new one (counted as this error)
                chain["token"] = self._tokens(cookie)["refresh_token"]
            return err, {}

        return op

    def code(self, _: int) -> Op:
        cookie = self._sign_in()

        def op():
            err, _, t_auth, t_token = code_flow(
                self.port, self.web, cookie, self.authorize, self.token
            )
            return err, {"authorize": t_auth, "token": t_token}

        return op

    def userinfo(self, _: int) -> Op:
        bearer = {"Authorization": "Bearer " + self._tokens(self._sign_in())["access_token"]}

        def op():
            status, text, _, _ = request(self.port, "GET", "/userinfo", bearer)
            if status != 200 or '"sub"' not in text:
                return f"GET /userinfo -> {status} {text[:80]}", {}
            return None, {}

        return op


def prepare(
    tmp: str, database_url: str | None = None, **extra: str
) -> tuple[dict[str, str], int, App, App]:
    """The service's environment (a fresh database: SQLite in tmp unless database_url is
    given, production settings, `extra` settings), its port, the signing keys, the account,
    and the two apps (web, service)."""
    port = free_port()
    env = service_env(
        port,
        database_url or f"sqlite:///{tmp}/bench.sqlite3",
        # One app carries the whole load: the per-client limit would measure itself.
        IDP_TOKEN_RATE_LIMIT="100000/second",
        # Every sign-in comes from this one address: its limit would measure itself too.
        IDP_PASSWORD_CHECK_RATE_LIMIT="100000/second",
        **extra,
    )
    run_flask(env, ["db", "upgrade"])
    run_flask(env, ["keys", "list"])  # makes the signing keys, as `setup` does
    run_flask(
        env,
        ["user", "create", "--username", USERNAME, "--email", EMAIL, "--password-stdin"],
        stdin=PASSWORD + "\n",
    )
    web = register(env, "bench-web", "--redirect-uri", CALLBACK, "--skip-consent")
    service_app = register(env, "bench-service", "--grant-type", "client_credentials")
    return env, port, web, service_app
