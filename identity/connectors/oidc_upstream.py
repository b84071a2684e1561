"""Any OpenID Connect provider as a way to sign in: discovery, the code flow and the ID token
through Authlib's Flask client, and the verified claims as one Identity.

Each configured upstream (identity.settings.upstreams, or stored from the admin console:
identity.connectors.upstream_registry) is one UpstreamConnector, a redirect connector of the
registry (its routes: identity.connectors.oidc_routes). Its `start()` answers the redirect
to the upstream (code flow, PKCE S256, state and nonce kept in the signed session by
Authlib); its `finish()` exchanges the code and returns the Identity; both raise
RedirectFailure, which the handler (identity.auth.finalize) turns into the page. Nothing the
upstream sends is stored: its tokens serve the callback request only.

Checked beyond what Authlib checks: the discovery document's `issuer` is the configured one
(Discovery 4.3), the ID token's `aud` holds our client id, its `sub` is a non-empty string,
and userinfo's `sub` is the ID token's (Core 5.3.2).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import FlaskIntegration, FlaskOAuth2App
from flask import current_app, g, request, session, url_for
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from identity.connectors import registry
from identity.connectors.base import Identity, RedirectFailure, RedirectHandler
from identity.connectors.oidc_discovery import (
    UpstreamSession,
    bad_metadata,
    discover,
    network_failure,
)
from identity.security import safe_next
from identity.settings.upstreams import Upstream

log = logging.getLogger("identity.oidc_upstream")

# A discovery document is read again after this long (seconds); the keys are read again
# whenever an ID token names a key id the cached set lacks (Authlib's fetch_jwk_set).
METADATA_MAX_AGE = 3600
# Clock skew allowed on the ID token's exp and iat (seconds).
LEEWAY = 60
# Sign-ins started and not finished (several tabs) kept at once.
PENDING_MAX = 3
# linked_identities.subject holds 255 characters.
SUBJECT_MAX = 255


class _App(FlaskOAuth2App):
    client_cls = UpstreamSession


def subject_for(issuer: str, sub: str) -> str:
    """The stored subject: the issuer and its `sub` (an issuer has no '#'), so that two
    providers' subs never meet, nor one id's subs after its issuer changed. Too long for
    the column, it is the SHA-256 of the same."""
    subject = f"{issuer}#{sub}"
    if len(subject) <= SUBJECT_MAX:
        return subject
    return "sha256:" + hashlib.sha256(subject.encode()).hexdigest()


class UpstreamConnector:
    """The RedirectConnector for one upstream OpenID provider."""

    kind = registry.REDIRECT
    provisioning = registry.EMAIL
    icon = "openid"  # the generic OpenID mark (templates/icons/openid.svg)

    def __init__(self, upstream: Upstream, *, timeout: float, ca_file: str | None):
        self.upstream = upstream
        self.id = upstream.connector  # oidc-<id>
        self.label = upstream.label
        self.handler: RedirectHandler | None = None
        self.timeout = timeout
        self.verify: str | bool = ca_file or True
        self._client: _App | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"UpstreamConnector({self.id!r})"

    @property
    def asserts_groups(self) -> bool:
        """With a groups claim configured, the upstream says the groups at every sign-in."""
        return bool(self.upstream.groups_claim)

    def init_app(self, app, handler: RedirectHandler) -> None:
        """The routes (one blueprint for every upstream, registered once) and the handler
        its callback returns through."""
        from identity.connectors import oidc_routes

        self.handler = handler
        oidc_routes.register(app)

    def login_url(self, next_url: str | None = None) -> str:
        return url_for(
            "oidc_upstream.login", upstream=self.upstream.id, next=safe_next(next_url) or None
        )

    def redirect_uri(self) -> str:
        """The callback, built from IDP_ISSUER (never the Host header): what the
        administrator registers at the upstream."""
        path = url_for("oidc_upstream.callback", upstream=self.upstream.id)
        return current_app.config["ISSUER"] + path

    # -- the two steps ----------------------------------------------------------------

    def start(self):
        """The redirect to the upstream's authorization endpoint (raises RedirectFailure)."""
        client = self._ready_client()
        self._forget_old_states()
        try:
            return client.authorize_redirect(self.redirect_uri())
        except RuntimeError as exc:  # Authlib: no authorization endpoint
            raise bad_metadata(str(exc)) from exc

    def finish(self) -> Identity:
        """The callback: check the answer, exchange the code, verify the ID token, read
        userinfo when a claim is missing, and return the Identity (raises RedirectFailure)."""
        args = request.args
        state, code = args.get("state"), args.get("code")
        if "error" in args:
            self._forget_state(state)
            error = args.get("error", "")
            reason = "access_denied" if error == "access_denied" else "provider_error"
            # The page shows the error only when it is an error code (identity.auth.finalize).
            raise RedirectFailure(reason, args.get("error_description", "")[:300], error=error)
        if not state:
            raise RedirectFailure("state_mismatch" if code else "bad_callback")
        if f"_state_{self.id}_{state}" not in session:  # Authlib's key for a pending sign-in
            raise RedirectFailure("state_mismatch")
        if not code:
            self._forget_state(state)  # the sign-in is spent
            raise RedirectFailure("missing_code")
        client = self._ready_client()
        try:
            token = client.authorize_access_token(
                claims_options=self._claims_options(client), leeway=LEEWAY
            )
            claims = token.get("userinfo")
            if not claims:
                raise RedirectFailure("bad_id_token", "the token response has no ID token")
            claims = dict(claims)
            if self._needs_userinfo(claims, client):
                claims = self._with_userinfo(client, token, claims)
        except MismatchingStateError as exc:
            raise RedirectFailure("state_mismatch") from exc
        except requests.RequestException as exc:
            raise network_failure(exc) from exc
        except OAuthError as exc:
            raise RedirectFailure(
                "token_exchange_failed", f"{exc.error}: {exc.description}"
            ) from exc
        except JoseError as exc:
            raise RedirectFailure("bad_id_token", f"{type(exc).__name__}: {exc}") from exc
        except (ValueError, TypeError, KeyError) as exc:  # an answer that is not JSON
            raise RedirectFailure("bad_answer", f"{type(exc).__name__}: {exc}") from exc
        # For an administrator's trial (identity.auth.upstream_trial): the upstream's own words.
        g.upstream_claims = {k: claims.get(k) for k in ("sub", "email_verified")}
        return self.identity(claims)

    def check(self) -> dict[str, Any]:
        """Discovery and the keys, read now (for the administrator): what was found, or
        RedirectFailure. A good reading replaces the cached one."""
        metadata = self._discover()
        client = self._build(metadata)
        try:
            keys = KeySet.import_key_set(client.fetch_jwk_set(force=True))
        except requests.RequestException as exc:
            raise network_failure(exc) from exc
        except (ValueError, TypeError, KeyError, JoseError) as exc:
            raise bad_metadata(f"jwks_uri: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            self._client, self._loaded_at = client, time.monotonic()
        return {
            "issuer": metadata["issuer"],
            "authorization_endpoint": metadata["authorization_endpoint"],
            "token_endpoint": metadata["token_endpoint"],
            "userinfo_endpoint": metadata.get("userinfo_endpoint"),
            "algorithms": metadata["id_token_signing_alg_values_supported"],
            "keys": [k.kid or "(no kid)" for k in keys],
            "redirect_uri": self.redirect_uri(),
        }

    # -- claims -> Identity -------------------------------------------------------------

    def identity(self, claims: dict[str, Any]) -> Identity:
        up = self.upstream
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise RedirectFailure("bad_id_token", "bad sub")
        email = _text(claims.get("email"), 254)
        if email is not None and email.count("@") != 1:
            email = None
        name = _text(claims.get("name"), 200)
        username = (
            _text(claims.get(up.username_claim), 200)
            or (email or "").split("@")[0]
            or name
            or f"{up.id}-user"
        )
        groups: tuple[str, ...] = ()
        if up.groups_claim:
            raw = claims.get(up.groups_claim)
            if isinstance(raw, list):
                names = (_text(g, 200) for g in raw)
                groups = tuple(dict.fromkeys(g for g in names if g))[:200]
        return Identity(
            connector=up.connector,
            subject=subject_for(up.issuer, sub),
            username=username,
            email=email,
            # Only when the upstream asserts it (a JSON true) and the administrator trusts it.
            email_verified=bool(email)
            and up.trust_email_verified
            and claims.get("email_verified") is True,
            name=name,
            groups=groups,
            amr=("fed",),
        )

    def _needs_userinfo(self, claims: dict, client: _App) -> bool:
        if not client.server_metadata.get("userinfo_endpoint"):
            return False
        wanted = ["email", "name", self.upstream.username_claim]
        if self.upstream.groups_claim:
            wanted.append(self.upstream.groups_claim)
        return any(k not in claims for k in wanted)

    def _with_userinfo(self, client: _App, token: dict, claims: dict) -> dict:
        resp = client.get(
            client.server_metadata["userinfo_endpoint"], token=token, timeout=self.timeout
        )
        if resp.status_code != 200:
            raise RedirectFailure("bad_userinfo", f"userinfo answered {resp.status_code}")
        try:
            info = resp.json()
        except ValueError as exc:
            raise RedirectFailure("bad_userinfo", f"userinfo is not JSON: {exc}") from exc
        if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
            raise RedirectFailure("bad_userinfo", "userinfo is about someone else (its sub)")
        # The ID token's claims win: they are signed.
        return {**info, **claims}

    # -- discovery ------------------------------------------------------------------------

    def _ready_client(self) -> _App:
        """The Authlib client, built from a discovery document at most METADATA_MAX_AGE
        old; raises RedirectFailure when the upstream cannot be asked or answers nonsense."""
        client = self._client
        if client is not None and time.monotonic() - self._loaded_at < METADATA_MAX_AGE:
            return client
        # Asked with no lock held: the worker lets go of its own while a request waits on an
        # upstream (oidc_discovery.UpstreamSession), and a request of the worker waiting on
        # a lock held across that wait would never let it come back. Two requests may both
        # ask; the later answer is kept.
        client = self._build(self._discover())
        with self._lock:
            self._client, self._loaded_at = client, time.monotonic()
        return client

    def _discover(self) -> dict[str, Any]:
        return discover(self.upstream, verify=self.verify, timeout=self.timeout)

    def _build(self, metadata: dict[str, Any]) -> _App:
        up = self.upstream
        auth_methods = metadata.get("token_endpoint_auth_methods_supported") or [
            "client_secret_basic"
        ]
        auth = (
            "client_secret_post"
            if "client_secret_basic" not in auth_methods and "client_secret_post" in auth_methods
            else "client_secret_basic"
        )
        return _App(
            FlaskIntegration(up.connector),
            up.connector,
            client_id=up.client_id,
            client_secret=up.client_secret,
            client_kwargs={
                "scope": " ".join(up.scopes),
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": auth,
                "default_timeout": self.timeout,
                "verify": self.verify,
            },
            **metadata,
        )

    def _claims_options(self, client: _App) -> dict:
        return {
            "iss": {"essential": True, "values": [self.upstream.issuer]},
            "aud": {"essential": True, "values": [self.upstream.client_id]},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }

    # -- failures -------------------------------------------------------------------------

    def _forget_state(self, state: str | None) -> None:
        if state:
            session.pop(f"_state_{self.id}_{state}", None)

    def _forget_old_states(self) -> None:
        """Keep the newest PENDING_MAX - 1 unfinished sign-ins (tabs) before a new one: each
        is kept in the session cookie, which browsers drop beyond 4 KB."""
        prefix = f"_state_{self.id}_"
        pending = sorted(
            (k for k in session if k.startswith(prefix)),
            key=lambda k: (session[k] or {}).get("exp", 0),
        )
        for key in pending[: max(0, len(pending) - (PENDING_MAX - 1))]:
            session.pop(key)


def _text(value: Any, limit: int) -> str | None:
    """A claim as a short printable string, or None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    return value


def configured(app) -> list[UpstreamConnector]:
    """One connector per enabled upstream of IDP_OIDC_UPSTREAMS."""
    return [connector(app.config, upstream) for upstream in app.config["OIDC_UPSTREAMS"]]


def connector(cfg, upstream: Upstream) -> UpstreamConnector:
    return UpstreamConnector(upstream, timeout=cfg["SOCIAL_TIMEOUT"], ca_file=cfg["SOCIAL_CA_FILE"])
