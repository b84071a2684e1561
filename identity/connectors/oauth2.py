"""The redirect connector for an OAuth 2.0 provider described as data, through Flask-Dance:
the dance, the state check, the profile as an Identity, every failure as a RedirectFailure.
Loaded only where a provider is configured (with Flask-Dance, oauthlib and requests: 7 MB
a worker).

It renders no page and keeps no token: the token serves the profile call in the callback's
request and is then forgotten (RequestStorage); the result goes to the handler
(identity.auth.finalize), which signs in, links, or shows the failure.
"""

from __future__ import annotations

import hmac
import importlib
import logging
from typing import Any

import requests
from flask import Flask, current_app, g, request, session, url_for
from flask_dance.consumer import OAuth2ConsumerBlueprint, oauth_authorized, oauth_error
from flask_dance.consumer.requests import OAuth2Session
from flask_dance.consumer.storage import BaseStorage
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from identity.connectors import registry
from identity.connectors.base import Identity, RedirectFailure, RedirectHandler
from identity.connectors.providers import Provider, to_identity
from identity.one_at_a_time import waiting_elsewhere
from identity.security import safe_next


class RequestStorage(BaseStorage):
    """Holds the provider's token for the rest of the request only: long enough to read the
    profile, never written anywhere.

    The service uses a provider only to learn who signs in, never to call it on the
    person's behalf later, so a stored token would be a secret kept for nothing (and a
    prize in a database leak). Flask-Dance's session or SQLAlchemy storages would keep it.
    """

    def get(self, blueprint):
        return g.get(f"_oauth_token_{blueprint.name}")

    def set(self, blueprint, token):
        setattr(g, f"_oauth_token_{blueprint.name}", token)

    def delete(self, blueprint):
        g.pop(f"_oauth_token_{blueprint.name}", None)


class IssuerCallbackSession(OAuth2Session):
    """Flask-Dance's session to the provider, whose callback address (`redirect_uri`) is
    built from IDP_ISSUER: what the administrator registered at the provider. Flask-Dance
    sets it from the request's Host header, which the client chooses (and which a proxy
    may not pass on); that setting is ignored here."""

    @property
    def redirect_uri(self) -> str:
        path = url_for(f"{self.blueprint.name}.authorized")
        return current_app.config["ISSUER"].rstrip("/") + path

    @redirect_uri.setter
    def redirect_uri(self, _value) -> None:
        pass

    def request(self, *args, **kwargs):
        # The token exchange and the profile: the worker answers other requests meanwhile.
        with waiting_elsewhere():
            return super().request(*args, **kwargs)


class OAuth2Connector:
    """One provider's button, routes (/login/<id>, /login/<id>/authorized) and callback."""

    kind = registry.REDIRECT
    provisioning = registry.EMAIL

    def __init__(self, provider: Provider):
        self.provider = provider
        self.id = provider.id
        self.label = provider.label
        self.icon = provider.id
        self.blueprint: OAuth2ConsumerBlueprint | None = None

    def login_url(self, next_url: str | None = None) -> str:
        return url_for(f"{self.id}.login", next=safe_next(next_url) or None)

    def init_app(self, app: Flask, handler: RedirectHandler) -> None:
        # Flask-Dance and oauthlib log client secrets and PKCE verifiers at DEBUG.
        for name in ("flask_dance", "requests_oauthlib", "oauthlib"):
            logging.getLogger(name).setLevel(logging.WARNING)
        bp = self.blueprint = self._blueprint(app.config)
        finish = handler.finish

        def fail(reason: str, detail: str = "", error: str | None = None):
            # This dance's own leftovers go; the handler clears the rest.
            for key in (f"{bp.name}_oauth_state", f"{bp.name}_oauth_code_verifier"):
                session.pop(key, None)
            return finish(self, RedirectFailure(reason, detail, error))

        @bp.before_request
        def _before():
            if request.endpoint == f"{bp.name}.login":
                handler.start(self)
                return None
            if request.endpoint == f"{bp.name}.authorized" and "error" not in request.args:
                # Checked here rather than left to Flask-Dance, which silently restarts the
                # dance when the state is missing.
                expected = session.get(f"{bp.name}_oauth_state")
                got = request.args.get("state", "").encode()  # bytes: str must be ASCII here
                if not expected or not hmac.compare_digest(expected.encode(), got):
                    return fail("state_mismatch")
                if not request.args.get("code"):
                    return fail("missing_code")
            return None

        @bp.errorhandler(requests.RequestException)  # the token exchange timed out or failed
        def _unreachable(exc):
            return fail(*_network(exc))

        @bp.errorhandler(OAuth2Error)
        def _oauth(exc):
            return fail("token_exchange_failed", f"{exc.error}: {exc.description}")

        @bp.errorhandler(Warning)  # oauthlib raises "Scope has changed" as a Warning
        def _warning(exc):
            return fail("token_exchange_failed", str(exc))

        @bp.errorhandler(ValueError)  # a token response that is not JSON
        def _bad_answer(exc):
            return fail("bad_answer", str(exc))

        @oauth_error.connect_via(bp)
        def _provider_error(blueprint, error, error_description=None, error_uri=None):
            reason = "access_denied" if error == "access_denied" else "provider_error"
            return fail(reason, str(error_description), error=str(error))

        @oauth_authorized.connect_via(bp)
        def _authorized(blueprint, token):
            try:
                result: Identity | RedirectFailure = self.callback(blueprint)
            except RedirectFailure as failure:
                result = failure
            return finish(self, result)

        app.register_blueprint(bp, url_prefix="/login")

    def callback(self, blueprint: OAuth2ConsumerBlueprint) -> Identity:
        """After the token exchange: the profile (and the addresses) as an Identity."""
        body = self._get(blueprint, self.provider.profile_path)
        emails = None
        if self.provider.emails_path:
            emails = self._get(blueprint, self.provider.emails_path)
        identity = to_identity(self.provider, body, emails)
        if identity is None:
            raise RedirectFailure("bad_profile", "no id in the profile")
        return identity

    def _get(self, blueprint: OAuth2ConsumerBlueprint, path: str) -> Any:
        try:
            resp = blueprint.session.get(path, timeout=self._timeout, verify=self._verify)
        except requests.RequestException as exc:
            raise RedirectFailure(*_network(exc)) from exc
        try:
            body = resp.json() if resp.ok else None
        except ValueError:
            body = None
        if body is None:
            raise RedirectFailure("bad_profile", f"{path} answered {resp.status_code}")
        return body

    def _blueprint(self, cfg) -> OAuth2ConsumerBlueprint:
        p, key = self.provider, self.provider.setting
        if p.preset is not None:
            contrib = importlib.import_module(f"flask_dance.contrib.{p.preset}")
            bp = getattr(contrib, f"make_{p.preset}_blueprint")(scope=list(p.scope))
        else:
            bp = OAuth2ConsumerBlueprint(p.id, __name__, scope=list(p.scope))
            bp.from_config["client_id"] = f"{key}_OAUTH_CLIENT_ID"
            bp.from_config["client_secret"] = f"{key}_OAUTH_CLIENT_SECRET"
        if p.pkce:
            bp.use_pkce, bp.code_challenge_method = True, "S256"
        bp.authorization_url = cfg[f"{key}_AUTHORIZATION_URL"]
        bp.token_url = cfg[f"{key}_TOKEN_URL"]
        bp.base_url = cfg[f"{key}_API_BASE_URL"]
        # Every call to the provider has a timeout: the token exchange here, the profile in
        # callback(). The CA goes with each call: requests lets REQUESTS_CA_BUNDLE override
        # a session's own setting.
        self._timeout, self._verify = cfg["SOCIAL_TIMEOUT"], cfg["SOCIAL_CA_FILE"] or True
        bp.token_url_params = {"timeout": self._timeout, "verify": self._verify}
        bp.storage = RequestStorage()
        bp.session_class = IssuerCallbackSession
        return bp


def _network(exc: requests.RequestException) -> tuple[str, str]:
    if isinstance(exc, requests.Timeout):
        return "timeout", str(exc)
    return "provider_unreachable", str(exc)
