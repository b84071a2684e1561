"""OpenID Connect provider throughput under make serve (granian): token grants, code flows and
userinfo per second, against the raw RS256 signing rate.

    .venv/bin/python bench/oidc.py [--seconds N] [--concurrency C] [--warmup W]
        [--signin-seconds S] [--ops cc,refresh,code,userinfo]

1. A fresh SQLite database in a temporary directory: `flask --app idp db upgrade`, the
   signing keys (`flask --app idp keys list` makes them, as `setup` does), one account,
   two apps registered with `flask --app idp client create --json`: a confidential web app
   (code + refresh, openid profile email, --skip-consent) and a service app
   (client_credentials only). Production settings, default algorithms (RS256 access tokens).
2. The ceiling: joserfc `jwt.encode` of an access token with an imported RSA 2048 key, in
   2 processes (one per core), service not running.
3. The service under make serve (granian; 2 workers, plain HTTP on 127.0.0.1 as behind a
   TLS-terminating proxy; X-Forwarded-Proto: https is trusted from 127.0.0.1), C client
   threads per operation, each for W seconds of warm-up + N measured:
   - cc: POST /token, client_credentials, client_secret_basic;
   - refresh: POST /token, refresh_token; each thread rotates its own chain (from one code
     flow of its own, done before the window);
   - code: GET /authorize with a live session (each thread signs in once, before the
     window) + POST /token with the code and the PKCE S256 verifier;
   - userinfo: GET /userinfo with a Bearer access token (one per thread);
   - sign-in: GET + POST /login, for S seconds (what the code flow leaves out).
4. One table; the server is always stopped and the directory removed.

A benchmark: it never asserts, it prints figures. Exit 0 when it ran; 1 when setup failed,
the service did not start, or every call of an operation failed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import signal
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from _common import (
    CORES,
    WORKERS,
    BenchError,
    Op,
    Service,
    drive,
    drive_ops,
    free_port,
    interrupt,
    measure_processes,
    pct,
    request,
    run_flask,
    service_env,
    sign_in_session,
    timed_loop,
    timewait_sockets,
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
OPS = tuple(TARGETS)
NAMES = {
    "cc": "client credentials",
    "refresh": "refresh (rotating)",
    "code": "code flow (authz+token)",
    "userinfo": "userinfo",
}


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


def jwts(body: dict) -> int:
    """Signed JWTs in a token response (access token, ID token)."""
    return sum(
        1
        for k in ("access_token", "id_token")
        if isinstance(body.get(k), str) and body[k].count(".") == 2
    )


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
        self.signins: list[float] = []  # each thread's one sign-in, GET+POST seconds
        self.jwts = 0  # signed JWTs in one response of this operation

    def _sign_in(self) -> str:
        t0 = time.perf_counter()
        err, cookie, _, _ = sign_in_session(self.port, USERNAME, PASSWORD)
        if err or cookie is None:
            raise BenchError(f"sign-in: {err}")
        self.signins.append(time.perf_counter() - t0)
        return cookie

    def _tokens(self, cookie: str) -> dict:
        err, body, _, _ = code_flow(self.port, self.web, cookie, self.authorize, self.token)
        if err:
            raise BenchError(f"code flow for a token: {err}")
        return body

    def cc(self, _: int) -> Op:
        form = {"grant_type": "client_credentials"}

        def op():
            err, body, _ = token_call(self.port, self.service_app, form, self.token)
            if err is None:
                self.jwts = jwts(body)
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
                self.jwts = jwts(body)
            else:  # the chain may be broken: start a new one (counted as this error)
                chain["token"] = self._tokens(cookie)["refresh_token"]
            return err, {}

        return op

    def code(self, _: int) -> Op:
        cookie = self._sign_in()

        def op():
            err, body, t_auth, t_token = code_flow(
                self.port, self.web, cookie, self.authorize, self.token
            )
            if err is None:
                self.jwts = jwts(body)
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


# ---------------------------------------------------------------------------- report


def _fmt(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'-' if value is None else f'{value:.{digits}f}':>{width}}"


def print_report(args, ceiling: dict, results: dict, signin: dict | None) -> int:
    raw = ceiling["rate"]
    raw_ms = 1000 * ceiling["cpu_per_op"]
    print()
    print(
        f"{'operation':<25}{'ops/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'target':>8}{'met':>5}"
        f"{'JWS':>5}{'sign-bound':>11}{'svc ms/op':>10}{'svc %':>7}{'gen %':>7}"
    )

    def row(name, rate, lat, target=None, n_jws=None, svc_ms=None, svc=None, gen=None):
        bound = raw / n_jws if n_jws else None
        met = "-" if target is None else ("yes" if rate >= target else "NO")
        print(
            f"{name:<25}{rate:>8.1f}{pct(lat, 50):>8.1f}{pct(lat, 99):>8.1f}"
            f"{_fmt(target, 8, 0)}{met:>5}{_fmt(n_jws, 5, 0)}{_fmt(bound, 11, 0)}"
            f"{_fmt(svc_ms, 10, 2)}{_fmt(svc, 7, 0)}{_fmt(gen, 7, 0)}"
        )

    row(f"RS256 sign (raw, {SIGN_PROCS} procs)", raw, ceiling["lat"], n_jws=1, svc_ms=raw_ms)
    failed = False
    for key, (load, phase) in results.items():
        ok = len(load["full"])
        failed |= ok == 0
        row(
            NAMES[key],
            load["rate"],
            load["full"],
            TARGETS[key],
            phase.jwts,
            1000 * load["service_cpu_s"] / ok if ok else None,
            load["service_cpu_pct"],
            load["client_cpu_pct"],
        )
        for part in ("authorize", "token"):
            if part in load["parts"]:
                label = "  GET /authorize" if part == "authorize" else "  POST /token (code)"
                row(label, load["rate"], load["parts"][part])
    if signin is not None:
        ok = len(signin["full"])
        row(
            "sign-in (GET+POST /login)",
            signin["rate"],
            signin["full"],
            svc_ms=1000 * signin["service_cpu_s"] / ok if ok else None,
            svc=signin["service_cpu_pct"],
            gen=signin["client_cpu_pct"],
        )
    print()
    print(
        "JWS = JWTs signed per operation (access token, ID token); sign-bound = raw RS256 "
        "rate / JWS: the most 2 cores could do if signing were all an operation cost.\n"
        "svc ms/op = server CPU (main process + workers, user+sys) per operation; svc % and gen % "
        "= CPU of the server and of this load generator, % of one core "
        f"({CORES} cores = {100 * CORES}%)."
    )
    print(f"raw RS256 sign: {raw_ms:.2f} ms CPU per signature (joserfc, RSA 2048).")
    for key, (load, _) in results.items():
        ok = len(load["full"])
        svc_ms = 1000 * load["service_cpu_s"] / ok if ok else float("nan")
        errors = load["errors"]
        print(
            f"{key}: {ok} ok, {sum(errors.values())} errors; CPU-bound at "
            f"{1000 * CORES / svc_ms:.0f}/s if the service had all {CORES} cores; other "
            f"processes {load['others_pct']:.0f}% of one core; {load['timewait']} sockets "
            "in TIME_WAIT before"
        )
        for err, n in errors.most_common(5):
            print(f"  error x{n}: {err}")
    signins = [t for _, phase in results.values() for t in phase.signins]
    if signins:
        print(
            f"sign-in before the window (once per thread, {len(signins)} in all): "
            f"p50 {pct(signins, 50):.1f} ms, max {1000 * max(signins):.1f} ms (GET+POST /login)"
        )
    if signin is not None:
        errors = signin["errors"]
        print(
            f"sign-in phase: {len(signin['full'])} ok, {sum(errors.values())} errors in "
            f"{args.signin_seconds:g} s"
        )
        for err, n in errors.most_common(5):
            print(f"  error x{n}: {err}")
    others = max([ceiling["others_pct"], *(r[0]["others_pct"] for r in results.values())])
    if others > 10:
        print(
            f"NOISY: other processes used up to {others:.0f}% of one core; rates and p99 are "
            "unreliable (compare svc ms/op instead, or run again on a quiet machine)"
        )
    print(
        f"{args.concurrency} client threads per operation, {WORKERS} server workers; "
        "one new connection per request; TLS excluded (plain HTTP on loopback, as behind a "
        "TLS-terminating proxy)."
    )
    return 1 if failed else 0


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="measured time per operation")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (default 2)")
    ap.add_argument(
        "--signin-seconds",
        type=float,
        default=5.0,
        help="measured time of the sign-in row (default 5; 0 leaves it out)",
    )
    ap.add_argument(
        "--ops",
        default=",".join(OPS),
        help=f"operations to measure, comma-separated (default {','.join(OPS)})",
    )
    args = ap.parse_args()
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if args.seconds <= 0 or args.concurrency < 1 or args.warmup < 0 or args.signin_seconds < 0:
        ap.error("--seconds must be > 0, --concurrency >= 1, --warmup and --signin-seconds >= 0")
    if not ops or any(o not in OPS for o in ops):
        ap.error(f"--ops: choose from {','.join(OPS)}")

    # SIGTERM takes the same path as Ctrl-C: the finally blocks stop the server.
    signal.signal(signal.SIGTERM, interrupt)

    service: Service | None = None
    results: dict = {}
    signin = None
    with tempfile.TemporaryDirectory(prefix="idp-bench-") as tmp:
        try:
            print(f"setup: database in {tmp}; {CORES} cores", flush=True)
            env, port, web, service_app = prepare(tmp)
            iss = env["IDP_ISSUER"]
            print(
                f"ceiling: RS256 jwt.encode, {SIGN_PROCS} processes, {args.warmup:g} s warm-up "
                f"+ {args.seconds:g} s (service not running) ...",
                flush=True,
            )
            ceiling = measure_signing(args.seconds, args.warmup, iss)

            service = Service(env, port, Path(tmp) / "server.log")
            service.wait_ready()
            for key in ops:
                print(
                    f"{NAMES[key]}: make serve (granian), {WORKERS} workers on 127.0.0.1:{port}; "
                    f"{args.concurrency} client threads, {args.warmup:g} s warm-up "
                    f"+ {args.seconds:g} s ...",
                    flush=True,
                )
                phase = Phase(port, web, service_app)
                timewait = timewait_sockets()
                load = drive_ops(
                    args.concurrency, args.seconds, args.warmup, service, getattr(phase, key)
                )
                load["timewait"] = timewait
                results[key] = (load, phase)
                if service.proc.poll() is not None:
                    raise BenchError(f"the server exited during the run:\n{service.log_tail()}")
            if args.signin_seconds:
                print(
                    f"sign-in: {args.concurrency} client threads, {args.warmup:g} s warm-up "
                    f"+ {args.signin_seconds:g} s ...",
                    flush=True,
                )
                signin = drive(
                    port,
                    args.concurrency,
                    args.signin_seconds,
                    args.warmup,
                    service,
                    USERNAME,
                    PASSWORD,
                )
        except BenchError as exc:
            print(f"oidc bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("oidc bench: interrupted", file=sys.stderr)
            return 130
        finally:
            if service is not None:
                service.stop()

    status = print_report(args, ceiling, results, signin)
    if status:
        print("oidc bench: every call of an operation failed", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
