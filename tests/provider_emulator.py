"""Google, Facebook, X (Twitter) and GitHub OAuth 2.0 emulated by a real HTTPS server on
loopback.

One server (a small Flask app under Werkzeug, threaded, TLS from a CA of its own made by
identity.certs.ensure) speaks the authorization-code flow of four providers under path
prefixes; `ProviderEmulator.endpoints(provider)` gives the URLs to configure:

    provider  authorize                    token                        API base, profile
    google    /google/o/oauth2/v2/auth     /google/token                /google/ oauth2/v3/userinfo
    facebook  /facebook/dialog/oauth       /facebook/oauth/access_token /facebook/ me?fields=
    twitter   /twitter/i/oauth2/authorize  /twitter/2/oauth2/token      /twitter/ 2/users/me
    github    /github/login/oauth/authorize /github/login/oauth/access_token
                                                                        /github/api/ user,
                                                                        user/emails

Behaviour, as the real providers (and RFC 6749 / RFC 7636) would have it:

* authorize (GET): client_id must be the provider's; redirect_uri is required (without
  either: 400 page, no redirect). Then, as if the user approved, 302 to
  redirect_uri?code=...&state=... . Errors that can go back to the client go as
  redirect_uri?error=...&error_description=...&state=...: no state (invalid_request),
  response_type other than code (unsupported_response_type), X without
  code_challenge + code_challenge_method=S256 (invalid_request).
* token (POST form; Facebook also GET with query parameters): client authentication by
  HTTP Basic or client_id/client_secret in the body (wrong or missing: 401 invalid_client);
  grant_type=authorization_code (else 400 unsupported_grant_type); the code must exist,
  belong to this client, be unspent, and redirect_uri must repeat the authorize one (else
  400 invalid_grant). Whenever a code_challenge was sent (always with X) code_verifier is
  required (missing: 400 invalid_request) and must match (S256 or plain; else 400
  invalid_grant). Only a successful exchange spends a code; presenting a spent code fails
  and revokes the access token it gave. Success: 200 {"access_token", "token_type":
  "Bearer", "expires_in": 3600, "scope": <the scope string as requested, when one was>},
  X also "refresh_token" (the refresh grant itself is not emulated). GitHub as GitHub does:
  the scope comma-separated, the body form-encoded unless the request accepts JSON, and
  errors about the code or client with status 200 ({"error": ...} in the body).
* profile (GET): `Authorization: Bearer <token this emulator issued for that provider>`
  (else 401 invalid_token). Google answers the profile as configured; Facebook only the
  `fields` asked for (id,name when none), "picture" as {"data": {"url": ...}}; X
  {"data": {...}} with id, name, username plus the `user.fields` asked for; GitHub's
  `user` the profile without its "emails", `user/emails` that list ({"email", "primary",
  "verified", "visibility"} each). A field missing from the configured profile is left out
  of the answer. The profile knobs apply to GitHub's both calls.

Knobs are per provider (`emulator.knobs["google"].deny = True`, or `configure()`, which
sets them for one provider or, without one, for all); see `Knobs`. `reset()` puts knobs,
profiles, clients, codes, tokens and the recorded requests back to their defaults and wakes
any request still sleeping in a delay (it answers 503). `close()` wakes sleepers too, stops
the server, cuts open connections and joins every thread it started.

Fixtures: session-scoped `provider_emulator` (one server for the session) and
function-scoped `emulator` (reset before and after each test). Load them with
``pytest_plugins = ["provider_emulator"]`` (conftest does).

The application under test must trust `ca_file` for its calls to the emulator (e.g.
``monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_file)`` or the session's verify).
Paths given to a requests-oauthlib/Flask-Dance session must be relative without a leading
slash ("oauth2/v3/userinfo"): "/oauth2/..." resolves against the host and loses the prefix.

PYTEST_DONT_REWRITE: test modules import this module before pytest loads it as a plugin.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import hmac
import json
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

import pytest
import requests
from flask import Flask, Response, jsonify, request
from werkzeug.serving import ThreadedWSGIServer

from identity import certs

PROVIDERS = ("google", "facebook", "twitter", "github")

AUTHORIZE_PATHS = {
    "google": "/google/o/oauth2/v2/auth",
    "facebook": "/facebook/dialog/oauth",
    "twitter": "/twitter/i/oauth2/authorize",
    "github": "/github/login/oauth/authorize",
}
TOKEN_PATHS = {
    "google": "/google/token",
    "facebook": "/facebook/oauth/access_token",
    "twitter": "/twitter/2/oauth2/token",
    "github": "/github/login/oauth/access_token",
}
API_PREFIXES = {
    "google": "/google/",
    "facebook": "/facebook/",
    "twitter": "/twitter/",
    "github": "/github/api/",
}
PROFILE_PATHS = {
    "google": "oauth2/v3/userinfo",
    "facebook": "me",
    "twitter": "2/users/me",
    "github": "user",
}
GITHUB_EMAILS_PATH = "user/emails"

GOOGLE_SCOPES = (
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
)
EXPIRES_IN = 3600
SHUTDOWN_TIMEOUT = 5.0

DEFAULT_PROFILES: dict[str, dict[str, Any]] = {
    "google": {
        "sub": "g-1001",
        "email": "grace@gmail.test",
        "email_verified": True,
        "name": "Grace G",
        "picture": "https://lh3.googleusercontent.test/a/grace.png",
    },
    "facebook": {
        "id": "f-2002",
        "name": "Frank F",
        "email": "frank@facebook.test",
        "picture": "https://platform-lookaside.fbsbx.test/frank.jpg",
    },
    "twitter": {
        "id": "x-3003",
        "name": "Xena X",
        "username": "xena",
        "profile_image_url": "https://pbs.twimg.test/profile_images/xena_normal.jpg",
        "confirmed_email": "xena@x.test",
    },
    "github": {
        "id": 4004,
        "login": "octo",
        "name": "Octo Cat",
        "email": None,  # the public address: people may leave it empty
        "avatar_url": "https://avatars.githubusercontent.test/u/4004",
        "emails": [
            {"email": "old@octo.test", "primary": False, "verified": True, "visibility": None},
            {"email": "octo@octo.test", "primary": True, "verified": True, "visibility": "private"},
        ],
    },
}
TWITTER_DEFAULT_FIELDS = ("id", "name", "username")
FACEBOOK_DEFAULT_FIELDS = ("id", "name")


@dataclass
class Knobs:
    """How one provider misbehaves. The defaults are a provider that works."""

    deny: bool = False  # authorize: 302 error=access_denied (the user said no)
    authorize_error: str | None = None  # authorize: 302 error=<this>, e.g. "server_error"
    authorize_error_description: str = "Emulated authorization error."  # ...and this
    token_delay: float = 0.0  # token: seconds to wait before answering
    token_status: int | None = None  # token: answer this status with an HTML body (e.g. 500)
    token_error: str | None = None  # token: 400 {"error": <this>} (401 for invalid_client)
    token_scope: str | None = None  # token: answer this "scope" instead of the requested one
    profile_delay: float = 0.0  # profile: seconds to wait before answering
    profile_status: int | None = None  # profile: this status (>= 500: HTML body, else JSON)
    profile_malformed: bool = False  # profile: 200, JSON content type, a body cut short


KNOB_NAMES = frozenset(f.name for f in dataclasses.fields(Knobs))


@dataclass
class _Code:
    provider: str
    client_id: str
    redirect_uri: str
    scope: str | None
    challenge: str | None
    method: str | None
    spent_token: str | None = None


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def _html(status: int, text: str) -> Response:
    body = f"<!doctype html><html><head><title>{status}</title></head><body><h1>{status}</h1>"
    body += f"<p>{text}</p></body></html>"
    return Response(body, status=status, mimetype="text/html")


def _json_error(status: int, error: str, description: str, **headers: str) -> Response:
    resp = jsonify({"error": error, "error_description": description})
    resp.status_code = status
    resp.headers.update(headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


class _Server(ThreadedWSGIServer):
    """Werkzeug's threaded server that knows its connections, so that close() can cut the
    ones still open (an idle keep-alive client, one that never finished its TLS handshake)
    and join every request thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._live: dict[threading.Thread, socket.socket] = {}
        self._live_lock = threading.Lock()
        self._request_threads: list[threading.Thread] = []
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"provider-emulator-request-{self.port}",
            daemon=True,
        )
        with self._live_lock:
            self._request_threads = [t for t in self._request_threads if t.is_alive()]
            self._request_threads.append(thread)
            self._live[thread] = request
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._live_lock:
            self._live.pop(threading.current_thread(), None)
        super().shutdown_request(request)

    def cut_connections(self, timeout: float) -> list[threading.Thread]:
        """Shut down every open connection and join the request threads; return those
        still alive after `timeout`."""
        with self._live_lock:
            for sock in self._live.values():
                try:
                    # The plain socket's shutdown: SSLSocket.shutdown would also drop its
                    # TLS state under the feet of the thread reading from it.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._request_threads)
        for thread in threads:
            thread.join(timeout)
        return [t for t in threads if t.is_alive()]


class ProviderEmulator:
    """See the module docstring. Thread-safe: the server answers from its own threads."""

    def __init__(self, certs_dir: str | Path, host: str = "127.0.0.1") -> None:
        certs_dir = Path(certs_dir)
        certs.ensure(certs_dir, ["localhost", "127.0.0.1"])
        self.ca_file = str(certs_dir / certs.CA_CERT)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certs_dir / certs.TLS_CERT, certs_dir / certs.TLS_KEY)

        self._default_clients = {
            p: (f"{p}-client-id", f"{p}-secret-{secrets.token_urlsafe(12)}") for p in PROVIDERS
        }
        self.clients: dict[str, tuple[str, str]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.knobs: dict[str, Knobs] = {}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, tuple[str, str]] = {}  # access token -> (provider, client_id)
        self._wake = threading.Event()  # set to end every delay in progress
        self._closed = False
        self.reset()

        # Bound and listening (port 0) before anything learns the port.
        self._server = _Server(host, 0, self._build_app(), ssl_context=context)
        # Handshakes in each request's own thread, not in the one accepting (see servers.py).
        self._server.socket.do_handshake_on_connect = False
        self.port: int = self._server.socket.getsockname()[1]
        self.base_url = f"https://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"provider-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- the API for tests ------------------------------------------------------------

    def endpoints(self, provider: str) -> dict[str, str]:
        self._check(provider)
        return {
            "authorization_url": self.base_url + AUTHORIZE_PATHS[provider],
            "token_url": self.base_url + TOKEN_PATHS[provider],
            "api_base_url": self.base_url + API_PREFIXES[provider],
        }

    def profile_url(self, provider: str) -> str:
        """The profile endpoint, without query (Facebook's fields, X's user.fields)."""
        return self.endpoints(provider)["api_base_url"] + PROFILE_PATHS[provider]

    def configure(self, provider: str | None = None, **knobs: Any) -> None:
        """Set knobs for one provider, or for all when `provider` is None."""
        unknown = set(knobs) - KNOB_NAMES
        if unknown:
            raise TypeError(f"unknown knobs {sorted(unknown)}; known: {sorted(KNOB_NAMES)}")
        for p in [self._check(provider)] if provider else PROVIDERS:
            for name, value in knobs.items():
                setattr(self.knobs[p], name, value)

    def approve(self, authorization_url: str, *, timeout: float = 10.0) -> str:
        """GET the authorization URL over HTTPS, as the user's browser would, and return the
        Location of the 302 it answers (the client's callback, with code or error)."""
        if not authorization_url.startswith(self.base_url + "/"):
            raise ValueError(f"{authorization_url!r} is not on this emulator ({self.base_url})")
        with (
            requests.Session() as s,
            s.get(
                authorization_url, verify=self.ca_file, allow_redirects=False, timeout=timeout
            ) as resp,
        ):
            location = resp.headers.get("Location")
            if resp.status_code != 302 or not location:
                raise AssertionError(
                    f"authorize answered {resp.status_code}, not a redirect: {resp.text[:500]}"
                )
            return location

    def reset(self) -> None:
        with self._lock:
            self.clients.clear()
            self.clients.update(self._default_clients)
            self.profiles.clear()
            self.profiles.update(copy.deepcopy(DEFAULT_PROFILES))
            self.knobs.clear()
            self.knobs.update({p: Knobs() for p in PROVIDERS})
            self.requests.clear()
            self._codes.clear()
            self._tokens.clear()
            self._wake.set()
            self._wake = threading.Event()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._wake.set()
        self._server.shutdown()
        self._thread.join(SHUTDOWN_TIMEOUT)
        stuck = self._server.cut_connections(SHUTDOWN_TIMEOUT)
        self._server.server_close()
        if self._thread.is_alive() or stuck:
            raise RuntimeError(f"provider emulator threads did not stop: {stuck or self._thread}")

    def __enter__(self) -> ProviderEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the server -------------------------------------------------------------------

    @staticmethod
    def _check(provider: str) -> str:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; one of {PROVIDERS}")
        return provider

    def _build_app(self) -> Flask:
        app = Flask("provider_emulator")
        app.json.sort_keys = False  # type: ignore[attr-defined]
        for p in PROVIDERS:
            app.add_url_rule(
                AUTHORIZE_PATHS[p],
                f"{p}_authorize",
                self._authorize,
                defaults={"provider": p},
                methods=["GET"],
            )
            app.add_url_rule(
                TOKEN_PATHS[p],
                f"{p}_token",
                self._token,
                defaults={"provider": p},
                methods=["POST", "GET"] if p == "facebook" else ["POST"],
            )
            app.add_url_rule(
                API_PREFIXES[p] + PROFILE_PATHS[p],
                f"{p}_profile",
                self._profile,
                defaults={"provider": p},
                methods=["GET"],
            )
        app.add_url_rule(
            API_PREFIXES["github"] + GITHUB_EMAILS_PATH,
            "github_emails",
            self._profile,
            defaults={"provider": "github", "emails": True},
            methods=["GET"],
        )
        app.before_request(self._record)
        return app

    def _record(self) -> None:
        entry = {
            "provider": (request.view_args or {}).get("provider"),
            "method": request.method,
            "path": request.path,
            "args": request.args.to_dict(),
            "form": request.form.to_dict(),
            "headers": dict(request.headers),
        }
        with self._lock:
            self.requests.append(entry)

    def _snapshot(self, provider: str) -> tuple[Knobs, threading.Event]:
        with self._lock:
            return dataclasses.replace(self.knobs[provider]), self._wake

    def _authorize(self, provider: str) -> Response:
        knobs, _ = self._snapshot(provider)
        args = request.args
        client_id, _secret = self.clients[provider]
        if args.get("client_id") != client_id:
            return _html(400, "invalid_client: the OAuth client was not found.")
        redirect_uri = args.get("redirect_uri")
        if not redirect_uri:
            return _html(400, "invalid_request: missing required parameter redirect_uri")
        state = args.get("state")

        def back(**params: str) -> Response:
            if state:
                params["state"] = state
            resp = Response(status=302)
            resp.headers["Location"] = _with_query(redirect_uri, params)
            return resp

        if not state:
            return back(error="invalid_request", error_description="state is required")
        if args.get("response_type") != "code":
            return back(
                error="unsupported_response_type", error_description="response_type must be code"
            )
        challenge = args.get("code_challenge")
        method = args.get("code_challenge_method")
        if provider == "twitter" and (not challenge or method != "S256"):
            return back(
                error="invalid_request",
                error_description="code_challenge with code_challenge_method=S256 is required",
            )
        if challenge:
            method = method or "plain"
            if method not in ("S256", "plain"):
                return back(
                    error="invalid_request", error_description="unsupported code_challenge_method"
                )
        elif method:
            return back(error="invalid_request", error_description="code_challenge is missing")
        if knobs.deny:
            return back(error="access_denied", error_description="The user denied access.")
        if knobs.authorize_error:
            return back(
                error=knobs.authorize_error, error_description=knobs.authorize_error_description
            )
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Code(
                provider=provider,
                client_id=client_id,
                redirect_uri=redirect_uri,
                scope=args.get("scope"),
                challenge=challenge,
                method=method if challenge else None,
            )
        return back(code=code)

    def _client_auth(self, provider: str, params: Any) -> str | None:
        """The client_id when the request authenticates as this provider's client."""
        client_id, secret = self.clients[provider]
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            given_id = unquote_plus(auth.username or "")
            given_secret = unquote_plus(auth.password or "")
            if params.get("client_id", given_id) != given_id:
                return None
            if params.get("client_secret", given_secret) != given_secret:
                return None
        elif auth is None:
            given_id = params.get("client_id", "")
            given_secret = params.get("client_secret", "")
        else:
            return None
        ok = hmac.compare_digest(given_id.encode(), client_id.encode())
        ok &= hmac.compare_digest(given_secret.encode(), secret.encode())
        return client_id if ok else None

    def _token(self, provider: str) -> Response:
        resp = self._token_answer(provider)
        if provider != "github":
            return resp
        # GitHub answers a refused code or client with 200 and the error in the body, and
        # form-encodes unless asked for JSON.
        if resp.status_code in (400, 401) and resp.is_json:
            resp.status_code = 200
            resp.headers.pop("WWW-Authenticate", None)
        if not resp.is_json:
            return resp
        # An OAuth app's token does not expire; its type is written in lower case.
        body = {k: v for k, v in resp.get_json().items() if k != "expires_in"}
        if "token_type" in body:
            body["token_type"] = "bearer"
        if "application/json" in request.headers.get("Accept", ""):
            resp.set_data(json.dumps(body))
        else:
            resp.set_data(urlencode(body))
            resp.mimetype = "application/x-www-form-urlencoded"
        return resp

    def _token_answer(self, provider: str) -> Response:
        knobs, wake = self._snapshot(provider)
        params = request.form if request.method == "POST" else request.args
        if knobs.token_delay and wake.wait(knobs.token_delay):
            return _html(503, "The emulator was reset or closed during the delay.")
        if knobs.token_status:
            return _html(knobs.token_status, "Emulated token endpoint failure.")
        client_id = self._client_auth(provider, params)
        if client_id is None:
            return _json_error(
                401,
                "invalid_client",
                "Client authentication failed.",
                **{"WWW-Authenticate": 'Basic realm="token"'},
            )
        if knobs.token_error:
            status = 401 if knobs.token_error == "invalid_client" else 400
            return _json_error(status, knobs.token_error, "Emulated token error.")
        if params.get("grant_type") != "authorization_code":
            return _json_error(
                400, "unsupported_grant_type", "Only authorization_code is emulated."
            )
        code = params.get("code", "")
        verifier = params.get("code_verifier")
        with self._lock:
            record = self._codes.get(code)
            if record is None or record.provider != provider or record.client_id != client_id:
                return _json_error(400, "invalid_grant", "Unknown authorization code.")
            if record.spent_token is not None:
                self._tokens.pop(record.spent_token, None)  # RFC 6749 4.1.2: revoke
                return _json_error(400, "invalid_grant", "Authorization code already used.")
            if params.get("redirect_uri") != record.redirect_uri:
                return _json_error(400, "invalid_grant", "redirect_uri does not match.")
            if record.challenge is not None:
                if not verifier:
                    return _json_error(400, "invalid_request", "code_verifier is required.")
                expected = s256(verifier) if record.method == "S256" else verifier
                if not hmac.compare_digest(expected.encode(), record.challenge.encode()):
                    return _json_error(400, "invalid_grant", "code_verifier does not match.")
            access_token = f"{provider}-at-{secrets.token_urlsafe(24)}"
            record.spent_token = access_token
            self._tokens[access_token] = (provider, client_id)
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": EXPIRES_IN,
        }
        scope = knobs.token_scope if knobs.token_scope is not None else record.scope
        if scope is not None:
            body["scope"] = ",".join(scope.split()) if provider == "github" else scope
        if provider == "twitter":
            body["refresh_token"] = f"twitter-rt-{secrets.token_urlsafe(24)}"
        resp = jsonify(body)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def _profile(self, provider: str, emails: bool = False) -> Response:
        knobs, wake = self._snapshot(provider)
        if knobs.profile_delay and wake.wait(knobs.profile_delay):
            return _html(503, "The emulator was reset or closed during the delay.")
        if knobs.profile_status:
            if knobs.profile_status >= 500:
                return _html(knobs.profile_status, "Emulated profile endpoint failure.")
            return _json_error(knobs.profile_status, "emulated", "Emulated profile error.")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            issued = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            profile = copy.deepcopy(self.profiles[provider])
        if issued is None or issued[0] != provider:
            return _json_error(
                401,
                "invalid_token",
                "A valid Bearer access token is required.",
                **{"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if knobs.profile_malformed:
            return Response('{"id": "cut-sh', status=200, mimetype="application/json")
        if provider == "google":
            return jsonify(profile)
        if provider == "github":
            listed = profile.pop("emails", [])
            return jsonify(listed if emails else profile)
        if provider == "facebook":
            wanted = request.args.get("fields")
            fields = wanted.split(",") if wanted else FACEBOOK_DEFAULT_FIELDS
            answer = {f.strip(): profile[f.strip()] for f in fields if f.strip() in profile}
            if isinstance(answer.get("picture"), str):
                answer["picture"] = {"data": {"url": answer["picture"]}}
            return jsonify(answer)
        extra = [f.strip() for f in request.args.get("user.fields", "").split(",") if f.strip()]
        fields = list(TWITTER_DEFAULT_FIELDS) + [
            f for f in extra if f not in TWITTER_DEFAULT_FIELDS
        ]
        return jsonify({"data": {f: profile[f] for f in fields if f in profile}})


@pytest.fixture(scope="session")
def provider_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderEmulator]:
    """One emulator for the whole session, closed at its end."""
    emulator = ProviderEmulator(tmp_path_factory.mktemp("provider-emulator"))
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture
def emulator(provider_emulator: ProviderEmulator) -> Iterator[ProviderEmulator]:
    """The session's emulator with default knobs, profiles and no codes, tokens or
    recorded requests; reset again afterwards."""
    provider_emulator.reset()
    yield provider_emulator
    provider_emulator.reset()
