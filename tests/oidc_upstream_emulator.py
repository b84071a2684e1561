"""An upstream OpenID provider emulated by a real HTTPS server on loopback, for the tests of
signing in with any OpenID Connect provider (identity.connectors.oidc_upstream).

Its issuer is https://127.0.0.1:<port>/op and it serves, as a provider would:

    /op/.well-known/openid-configuration   discovery (code flow, S256, RS256)
    /op/authorize                          GET: client_id, redirect_uri, response_type=code,
                                           state, nonce and an S256 code_challenge required;
                                           then 302 back with code and state (as if approved)
    /op/token                              POST: client_secret_basic or _post, the code once,
                                           redirect_uri and code_verifier checked; an access
                                           token and an RS256 ID token
    /op/jwks                               the public keys
    /op/userinfo                           Bearer: the profile

Knobs (attributes, reset by `reset()`) make it misbehave: `deny`, `discovery_issuer`,
`id_token_issuer`, `audience`, `azp`, `expired`, `bad_signature` (signed by a key it does not
publish, under a published kid), `nonce` (a fixed one instead of the request's),
`delay` (seconds before answering the token request), `userinfo_delay` (the same for
userinfo), `userinfo_malformed` (userinfo answers text that is not JSON), `id_token_claims`
(which profile claims go into the ID token; the rest only from userinfo), `userinfo_sub`,
`extra_metadata` (more discovery fields). `rotate()`
signs with a new key from then on and publishes only it. `profile` is the person.

Fixtures (conftest loads this module as a plugin): session-scoped `upstream_server`;
`upstream`, the same reset before and after a test; `upstream_entry`, changes to its
IDP_OIDC_UPSTREAMS entry (override or parametrize it).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import RSAKey
from provider_emulator import _Server

from identity import certs

CLIENT_ID = "idp-downstream"


class UpstreamEmulator:
    def __init__(self, certs_dir: Path, host: str = "127.0.0.1"):
        certs.ensure(certs_dir, ["localhost", "127.0.0.1"])
        self.ca_file = str(certs_dir / certs.CA_CERT)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs_dir / certs.TLS_CERT, certs_dir / certs.TLS_KEY)
        self.secret = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.reset()
        self._server = _Server(host, 0, self._build(), ssl_context=context)
        self._server.socket.do_handshake_on_connect = False
        self.port = self._server.socket.getsockname()[1]
        self.issuer = f"https://{host}:{self.port}/op"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self._wake.set()
            self._wake = threading.Event()
            self.key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4)})
            self.deny = False
            self.discovery_issuer: str | None = None
            self.id_token_issuer: str | None = None
            self.audience: str | list | None = None
            self.azp: str | None = None
            self.expired = False
            self.bad_signature = False
            self.nonce: str | None = None
            self.delay = 0.0
            self.userinfo_delay = 0.0
            self.userinfo_malformed = False
            self.id_token_claims: tuple[str, ...] | None = None
            self.userinfo_sub: str | None = None
            self.extra_metadata: dict[str, Any] = {}
            self.profile: dict[str, Any] = {
                "sub": "u-1001",
                "preferred_username": "oscar",
                "email": "oscar@upstream.test",
                "email_verified": True,
                "name": "Oscar Upstream",
                "groups": ["staff", "ops"],
            }
            self.codes: dict[str, dict] = {}
            self.tokens: dict[str, dict] = {}
            self.requests: list[str] = []

    def rotate(self) -> None:
        """A new signing key: the old one is no longer published."""
        self.key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4)})

    def settings(self, **extra) -> dict:
        """One IDP_OIDC_UPSTREAMS entry for this emulator."""
        return {
            "id": "corp",
            "issuer": self.issuer,
            "client_id": CLIENT_ID,
            "client_secret": self.secret,
            "label": "Corp SSO",
            "groups_claim": "groups",
            **extra,
        }

    def app_settings(self, **entry) -> dict:
        """The service's settings for signing in with this emulator (entry: changed keys)."""
        return {
            "OIDC_UPSTREAMS": [self.settings(**entry)],
            "SOCIAL_CA_FILE": self.ca_file,
            "SOCIAL_TIMEOUT": 1,
        }

    def close(self) -> None:
        self._wake.set()
        self._server.shutdown()
        self._thread.join(5)
        self._server.cut_connections(5)
        self._server.server_close()

    # -- the provider ---------------------------------------------------------------------

    def _build(self) -> Flask:
        app = Flask("upstream_emulator")
        app.add_url_rule("/op/.well-known/openid-configuration", "disc", self._discovery)
        app.add_url_rule("/op/authorize", "authorize", self._authorize)
        app.add_url_rule("/op/token", "token", self._token, methods=["POST"])
        app.add_url_rule("/op/jwks", "jwks", self._jwks)
        app.add_url_rule("/op/userinfo", "userinfo", self._userinfo)
        app.before_request(lambda: self.requests.append(request.path))
        return app

    def _discovery(self):
        base = self.issuer
        return jsonify(
            issuer=self.discovery_issuer or base,
            authorization_endpoint=f"{base}/authorize",
            token_endpoint=f"{base}/token",
            jwks_uri=f"{base}/jwks",
            userinfo_endpoint=f"{base}/userinfo",
            response_types_supported=["code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            code_challenge_methods_supported=["S256"],
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
            **self.extra_metadata,
        )

    def _authorize(self):
        a = request.args
        if a.get("client_id") != CLIENT_ID or not a.get("redirect_uri"):
            return "unknown client", 400
        back = a["redirect_uri"]
        if self.deny:
            query = {"error": "access_denied", "state": a.get("state", "")}
            return redirect(f"{back}?{urlencode(query)}")
        missing = [k for k in ("state", "nonce", "code_challenge") if not a.get(k)]
        if missing or a.get("response_type") != "code" or a.get("code_challenge_method") != "S256":
            return f"bad request: {missing}", 400
        code = secrets.token_urlsafe(16)
        self.codes[code] = dict(a)
        return redirect(f"{back}?{urlencode({'code': code, 'state': a['state']})}")

    def _token(self):
        with self._lock:
            wake = self._wake
        if self.delay:
            wake.wait(self.delay)
        auth = request.authorization
        client_id, secret = (
            (auth.username, auth.password)
            if auth
            else (request.form.get("client_id"), request.form.get("client_secret"))
        )
        if client_id != CLIENT_ID or secret != self.secret:
            return jsonify(error="invalid_client"), 401
        asked = self.codes.pop(request.form.get("code", ""), None)
        verifier = request.form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if (
            asked is None
            or asked["redirect_uri"] != request.form.get("redirect_uri")
            or challenge.rstrip(b"=").decode() != asked["code_challenge"]
        ):
            return jsonify(error="invalid_grant"), 400
        access = secrets.token_urlsafe(24)
        self.tokens[access] = asked
        now = int(time.time())
        claims = {
            k: v
            for k, v in self.profile.items()
            if self.id_token_claims is None or k in self.id_token_claims or k == "sub"
        }
        claims.update(
            iss=self.id_token_issuer or self.issuer,
            aud=self.audience or CLIENT_ID,
            iat=now - 3600 if self.expired else now,
            exp=now - 600 if self.expired else now + 300,
            nonce=self.nonce or asked["nonce"],
        )
        if self.azp:
            claims["azp"] = self.azp
        key = self.key
        if self.bad_signature:
            key = RSAKey.generate_key(2048, parameters={"kid": self.key.kid})
        id_token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
        return jsonify(access_token=access, token_type="Bearer", expires_in=300, id_token=id_token)

    def _jwks(self):
        return jsonify(keys=[self.key.as_dict(private=False)])

    def _userinfo(self):
        with self._lock:
            wake = self._wake
        if self.userinfo_delay:
            wake.wait(self.userinfo_delay)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            return jsonify(error="invalid_token"), 401
        if self.userinfo_malformed:
            return '{"sub": "u-1001", "email": ', 200, {"Content-Type": "application/json"}
        return jsonify({**self.profile, "sub": self.userinfo_sub or self.profile["sub"]})


@pytest.fixture(scope="session")
def upstream_server(tmp_path_factory) -> Iterator[UpstreamEmulator]:
    server = UpstreamEmulator(tmp_path_factory.mktemp("upstream"))
    yield server
    server.close()


@pytest.fixture
def upstream(upstream_server) -> Iterator[UpstreamEmulator]:
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture
def upstream_entry() -> dict:
    return {}
