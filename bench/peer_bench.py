"""The peer of `all.py`: oidc-provider (bench/peer/server.mjs) started, driven and compared.

The operations both servers answer, each with what it needs set up before the window:
client credentials (POST token endpoint, client_secret_basic), discovery, JWKS,
introspection of a client-credentials access token, userinfo with a Bearer token; then, on
a second peer whose workers share their storage in Redis, refresh (rotating) and the code
flow with a session (oidc.Phase's runs, signed in through the peer's interaction). Paths
come from each server's discovery document. The comparison rows: this service's rate over
the peer's (issue 16: >= 1.0x; >= 0.7x for refresh and the code flow), and both p99 at half
rate (< 50 ms).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import oidc
from _common import WORKERS, BenchError, Op, Service, pct, request, top_errors, wide_figures

PEER_DIR = Path(__file__).resolve().parent / "peer"
MEMORY_OPS = ("cc", "discovery", "jwks", "introspect", "userinfo")  # tokens in memory
SHARED_OPS = ("refresh", "code")  # a token issued by one worker, presented to the other
PEER_OPS = MEMORY_OPS + SHARED_OPS
WIDE_OPS = MEMORY_OPS  # issue 16: these at 8 and at 64 connections
RATIO_TARGET = 1.0
RATIO_TARGETS = {"refresh": 0.7, "code": 0.7}  # issue 16
HALF_P99_MS = 50.0


def peer_version() -> str:
    try:
        data = json.loads((PEER_DIR / "node_modules/oidc-provider/package.json").read_text())
    except (OSError, ValueError):
        return "?"
    return str(data.get("version", "?"))


def install() -> None:
    """`npm ci` in bench/peer when node_modules is missing or older than the lock file (as the
    Makefile does for tests/rp-node; `make bench` runs it first)."""
    modules, lock = PEER_DIR / "node_modules", PEER_DIR / "package-lock.json"
    if modules.is_dir() and modules.stat().st_mtime >= lock.stat().st_mtime:
        return
    try:
        proc = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=PEER_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"npm ci in {PEER_DIR}: {exc}") from exc
    if proc.returncode != 0:
        raise BenchError(f"npm ci in {PEER_DIR} failed:\n{proc.stdout}{proc.stderr}")
    modules.touch()


class PeerService(Service):
    """bench/peer/server.mjs under node: a primary and WORKERS workers (node:cluster) in its
    own process group; the CPU, memory and log methods are Service's."""

    def __init__(
        self,
        port: int,
        log_path: Path,
        workers: int = WORKERS,
        redis: tuple[str, str] | None = None,
    ):
        """`redis`: (URL, key prefix) to keep its storage in, shared by its workers."""
        from joserfc.jwk import RSAKey

        self.port, self.workers, self.log_path = port, workers, log_path
        self.service_app = _Client("bench-service")
        self.web = _Client("bench-web")
        self.introspect_token = secrets.token_urlsafe(32)
        self.userinfo_token = secrets.token_urlsafe(32)
        config = {
            "jwk": RSAKey.generate_key(2048).as_dict(private=True),
            "service": {"id": self.service_app.client_id, "secret": self.service_app.secret},
            "web": {"id": self.web.client_id, "secret": self.web.secret},
            "introspect_token": self.introspect_token,
            "userinfo_token": self.userinfo_token,
            "grant_id": secrets.token_urlsafe(32),
            "cookie_key": secrets.token_urlsafe(32),
        }
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "PEER_"))},
            "NODE_ENV": "production",
            "PEER_PORT": str(port),
            "PEER_WORKERS": str(workers),
            "PEER_CONFIG": json.dumps(config),
        }
        if redis:
            env["PEER_REDIS_URL"], env["PEER_REDIS_PREFIX"] = redis
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                ["node", "server.mjs"],
                cwd=PEER_DIR,
                env=env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            raise BenchError(f"node: {exc}") from exc
        self.paths: dict[str, str] = {}

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"the peer exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                status, text, _, _ = request(self.port, "GET", "/.well-known/openid-configuration")
                if status == 200 and len(self.worker_pids()) >= self.workers:
                    self.paths = endpoint_paths(text)
                    return
                last = f"discovery answered {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise BenchError(f"the peer not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")


class _Client(oidc.App):
    def __init__(self, name: str):
        super().__init__({"client_id": name, "client_secret": secrets.token_urlsafe(32)})


def endpoint_paths(discovery: str) -> dict[str, str]:
    """The paths of the endpoints the runs call, from a discovery document."""
    doc = json.loads(discovery)
    keys = {
        "authorize": "authorization_endpoint",
        "token": "token_endpoint",
        "jwks": "jwks_uri",
        "introspect": "introspection_endpoint",
        "userinfo": "userinfo_endpoint",
    }
    return {k: urllib.parse.urlsplit(doc[v]).path for k, v in keys.items()}


# ---------------------------------------------------------------------------- operations


def _get(port: int, path: str, headers: dict[str, str] | None, expect: str) -> Op:
    def op() -> tuple[str | None, dict[str, float]]:
        status, text, _, _ = request(port, "GET", path, headers)
        if status != 200 or expect not in text:
            return f"GET {path} -> {status} {text[:80]}", {}
        return None, {}

    return op


def _introspect(port: int, path: str, app: oidc.App, token: str) -> Op:
    headers = {"Authorization": app.basic, "Content-Type": oidc.FORM}
    body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"})

    def op() -> tuple[str | None, dict[str, float]]:
        status, text, _, _ = request(port, "POST", path, headers, body)
        if status != 200 or '"active":true' not in text.replace(" ", ""):
            return f"POST {path} -> {status} {text[:80]}", {}
        return None, {}

    return op


def _token(port: int, path: str, app: oidc.App) -> Op:
    headers = {"Authorization": app.basic, "Content-Type": oidc.FORM}
    body = urllib.parse.urlencode({"grant_type": "client_credentials"})

    def op() -> tuple[str | None, dict[str, float]]:
        status, text, _, _ = request(port, "POST", path, headers, body)
        try:
            token = json.loads(text).get("access_token", "")
        except (ValueError, AttributeError):
            token = ""
        if status != 200 or token.count(".") != 2:
            return f"POST {path} (client_credentials) -> {status} {text[:80]}", {}
        return None, {}

    return op


def service_op(
    key: str, port: int, web: oidc.App, service_app: oidc.App
) -> Callable[[int], Op] | None:
    """This service's discovery, JWKS and introspection (the others are oidc.Phase's)."""
    if key == "discovery":
        return lambda _: _get(port, "/.well-known/openid-configuration", None, '"issuer"')
    if key == "jwks":
        return lambda _: _get(port, "/jwks.json", None, '"keys"')
    if key == "introspect":

        def make(_: int) -> Op:
            # Each thread introspects a client-credentials access token of its own.
            err, body, _ = oidc.token_call(port, service_app, {"grant_type": "client_credentials"})
            if err:
                raise BenchError(f"a token to introspect: {err}")
            return _introspect(port, "/introspect", service_app, body["access_token"])

        return make
    return None


class PeerPhase(oidc.Phase):
    """oidc.Phase's refresh and code flow runs against the peer: its endpoints, and a
    session got as a browser gets one, through the interaction server.mjs completes."""

    def __init__(self, peer: PeerService):
        super().__init__(peer.port, peer.web, peer.service_app)
        self.authorize, self.token = peer.paths["authorize"], peer.paths["token"]

    def _sign_in(self) -> str:
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.web.client_id,
                "redirect_uri": oidc.CALLBACK,
                "scope": oidc.SCOPE,
                "state": secrets.token_urlsafe(12),
                "code_challenge": secrets.token_urlsafe(32),
                "code_challenge_method": "S256",
            }
        )
        jar: dict[str, str] = {}
        path = f"{self.authorize}?{query}"
        for _ in range(3):  # the authorize request, the interaction, the resumed request
            cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
            status, _, msg, _ = request(self.port, "GET", path, {"Cookie": cookie})
            for header in msg.get_all("Set-Cookie") or ():
                name, _, value = header.split(";", 1)[0].partition("=")
                jar[name.strip()] = value.strip()
            location = msg.get("Location", "")
            if status not in (302, 303) or not location:
                raise BenchError(f"peer sign-in: GET {path.split('?')[0]} -> {status}")
            if location.startswith(oidc.CALLBACK):
                session = {k: v for k, v in jar.items() if k.startswith("_session")}
                if not session:
                    raise BenchError("peer sign-in: no _session cookie")
                return "; ".join(f"{k}={v}" for k, v in session.items())
            parts = urllib.parse.urlsplit(location)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        raise BenchError(f"peer sign-in: no code after 3 redirects (at {path.split('?')[0]})")


def peer_op(key: str, peer: PeerService) -> Callable[[int], Op]:
    port, p = peer.port, peer.paths
    if key in SHARED_OPS:
        return getattr(PeerPhase(peer), key)
    if key == "cc":
        return lambda _: _token(port, p["token"], peer.service_app)
    if key == "discovery":
        return lambda _: _get(port, "/.well-known/openid-configuration", None, '"issuer"')
    if key == "jwks":
        return lambda _: _get(port, p["jwks"], None, '"keys"')
    if key == "introspect":
        return lambda _: _introspect(port, p["introspect"], peer.service_app, peer.introspect_token)
    if key == "userinfo":
        bearer = {"Authorization": f"Bearer {peer.userinfo_token}"}
        return lambda _: _get(port, p["userinfo"], bearer, '"sub"')
    raise ValueError(key)


# ---------------------------------------------------------------------------- report


def _f(value: float | None, width: int, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


def compare(rows: list[dict], peer_rows: dict[str, dict]) -> list[dict]:
    """One comparison per (backend, operation) both measured."""
    out = []
    for r in rows:
        p = peer_rows.get(r["operation"])
        if p is None:
            continue
        ratio = r["ops_per_s"] / p["ops_per_s"] if p["ops_per_s"] else None
        target = RATIO_TARGETS.get(r["operation"], RATIO_TARGET)
        checks = [(f"ratio >= {target:.1f}", ratio is not None and ratio >= target)]
        wide, peer_wide = r.get("wide"), p.get("wide")
        wide_ratio = None
        if wide and peer_wide:
            if peer_wide["ops_per_s"]:
                wide_ratio = wide["ops_per_s"] / peer_wide["ops_per_s"]
            checks.append(
                (
                    f"@{wide['threads']} >= {target:.1f}",
                    wide_ratio is not None and wide_ratio >= target,
                )
            )
        checks.append((f"half p99 < {HALF_P99_MS:g}", r["half_p99_ms"] < HALF_P99_MS))
        out.append(
            {
                "backend": r["backend"],
                "operation": r["operation"],
                "name": r["name"],
                "ops_per_s": r["ops_per_s"],
                "peer_ops_per_s": p["ops_per_s"],
                "ratio": ratio,
                "wide_threads": wide["threads"] if wide else None,
                "wide_ops_per_s": wide["ops_per_s"] if wide else None,
                "peer_wide_ops_per_s": peer_wide["ops_per_s"] if peer_wide else None,
                "wide_ratio": wide_ratio,
                "wide_p99_ms": wide["p99_ms"] if wide else None,
                "peer_wide_p99_ms": peer_wide["p99_ms"] if peer_wide else None,
                "wide_ms_per_op": wide["svc_ms_per_op"] if wide else None,
                "peer_wide_ms_per_op": peer_wide["svc_ms_per_op"] if peer_wide else None,
                "half_p99_ms": r["half_p99_ms"],
                "peer_half_p99_ms": p["half_p99_ms"],
                "svc_ms_per_op": r["svc_ms_per_op"],
                "peer_ms_per_op": p["svc_ms_per_op"],
                "gen_cpu_pct": r["gen_cpu_pct"],
                "peer_gen_cpu_pct": p["gen_cpu_pct"],
                "svc_cpu_pct": r["svc_cpu_pct"],
                "peer_cpu_pct": p["svc_cpu_pct"],
                "target": "; ".join(t for t, _ in checks),
                "met": "; ".join("yes" if ok else "NO" for _, ok in checks),
            }
        )
    return out


def print_comparison(comparison: list[dict], peer_rows: dict[str, dict], version: str) -> None:
    if not peer_rows:
        return
    print()
    print(
        f"against the peer: oidc-provider {version} (node, {WORKERS} workers, node:cluster), "
        "same load generator, same runs"
    )
    wide = next((c["wide_threads"] for c in comparison if c["wide_threads"]), None)
    at = f"@{wide}" if wide else "@-"
    print(
        f"{'backend':<9}{'operation':<20}{'ops/s':>8}{'peer':>8}{'ratio':>7}{at:>8}{'peer':>8}"
        f"{'ratio':>7}{'ms/op':>6}{'peer':>6}{'p99@half':>9}{'peer':>7}{'ms/op':>7}{'peer':>6}"
        f"{'gen %':>6}{'peer':>5}"
        f"{'svc %':>6}{'peer':>5}  {'target':<40}met"
    )
    for c in comparison:
        print(
            f"{c['backend']:<9}{c['name']:<20}{_f(c['ops_per_s'], 8)}{_f(c['peer_ops_per_s'], 8)}"
            f"{_f(c['ratio'], 7, 2)}{_f(c['wide_ops_per_s'], 8)}{_f(c['peer_wide_ops_per_s'], 8)}"
            f"{_f(c['wide_ratio'], 7, 2)}{_f(c['wide_ms_per_op'], 6, 2)}"
            f"{_f(c['peer_wide_ms_per_op'], 6, 2)}{_f(c['half_p99_ms'], 9)}"
            f"{_f(c['peer_half_p99_ms'], 7)}"
            f"{_f(c['svc_ms_per_op'], 7, 2)}{_f(c['peer_ms_per_op'], 6, 2)}"
            f"{_f(c['gen_cpu_pct'], 6, 0)}{_f(c['peer_gen_cpu_pct'], 5, 0)}"
            f"{_f(c['svc_cpu_pct'], 6, 0)}{_f(c['peer_cpu_pct'], 5, 0)}  {c['target']:<40}"
            f"{c['met']}"
        )
    shown = {c["operation"] for c in comparison}
    for key, p in peer_rows.items():
        if key not in shown:
            pw = (p.get("wide") or {}).get("ops_per_s")
            print(
                f"{'(peer)':<9}{p['name']:<20}{'-':>8}{_f(p['ops_per_s'], 8)}{'-':>7}{'-':>8}"
                f"{_f(pw, 8)}{'-':>7}{'-':>6}{'-':>6}{'-':>9}{_f(p['half_p99_ms'], 7)}{'-':>7}"
                f"{_f(p['svc_ms_per_op'], 6, 2)}{'-':>6}{_f(p['gen_cpu_pct'], 5, 0)}{'-':>6}"
                f"{_f(p['svc_cpu_pct'], 5, 0)}"
            )
    print(
        f"ratio = this service's ops/s / the peer's (peak runs; {at}: with that many client "
        "threads, issue 16's second connection count, and the server CPU per operation in "
        "that run); p99@half: each at half its own "
        "peak rate; ms/op: server CPU per operation; gen %, svc %: CPU of the load generator "
        "and of the server (primary + workers), % of one core. The peer: issuer "
        "https://localhost:<port> on plain HTTP, X-Forwarded-Proto trusted (proxy = true) as "
        "the service; client credentials give an RS256 JWT (a default resource server); it "
        "introspects an opaque token (it refuses JWTs) and keeps tokens in memory "
        "(its default adapter), the service reads its database. Refresh and code flow: a "
        "second peer, its storage in Redis (bench/peer/redis_adapter.mjs) shared by its "
        "workers, signed in through an interaction it completes at once; Redis's CPU is not "
        "in the peer's ms/op."
    )
    errs = [(k, p["top_errors"]) for k, p in peer_rows.items() if p["top_errors"]]
    for key, top in errs:
        print(f"errors (peer) {peer_rows[key]['name']}:")
        for err, n in top:
            print(f"  x{n}: {err}")


def peer_row(key: str, name: str, run: dict, wide: int) -> dict:
    peak, paced = run["peak"], run["paced"]
    ok = len(peak["full"])
    return {
        "operation": key,
        "name": name,
        "ops_per_s": peak["rate"],
        "p50_ms": pct(peak["full"], 50),
        "p99_ms": pct(peak["full"], 99),
        "half_p99_ms": pct(paced["full"], 99) if paced else float("nan"),
        "svc_ms_per_op": 1000 * peak["service_cpu_s"] / ok if ok else None,
        "gen_cpu_pct": peak["client_cpu_pct"],
        "svc_cpu_pct": peak["service_cpu_pct"],
        "other_cpu_pct": peak["others_pct"],
        "steal_cpu_pct": peak.get("steal_pct"),
        "ok": ok,
        "errors": sum(peak["errors"].values()),
        "half_ok": len(paced["full"]) if paced else None,
        "half_other_cpu_pct": paced["others_pct"] if paced else None,
        "wide": wide_figures(run, wide),
        "top_errors": top_errors(run),
    }
