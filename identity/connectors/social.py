"""Facebook, Google and X through Flask-Dance: the dance, the profile as an Identity, and
every failure as a clear page with nothing stored."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

import requests
from flask import (
    Flask,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_dance.consumer import OAuth2ConsumerBlueprint, oauth_authorized, oauth_error
from flask_dance.consumer.storage import BaseStorage
from flask_dance.contrib.facebook import make_facebook_blueprint
from flask_dance.contrib.google import make_google_blueprint
from flask_login import current_user
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from identity import audit
from identity.connectors.base import Identity
from identity.extensions import db
from identity.security import landing, safe_next

log = logging.getLogger("identity.social")

NEXT_KEY = "social_next"
LINK_KEY = "social_link"


class RequestStorage(BaseStorage):
    """Holds the provider's token for the rest of the request only: long enough to read the
    profile, never written anywhere.

    The service uses a provider only to learn who signs in, never to call it on the
    person's behalf later, so a stored token would be a secret kept for nothing (and a
    prize in a database leak). Flask-Dance's session or SQLAlchemy storages would keep it.
    """

    def get(self, blueprint):
        return g.get(f"_social_token_{blueprint.name}")

    def set(self, blueprint, token):
        setattr(g, f"_social_token_{blueprint.name}", token)

    def delete(self, blueprint):
        g.pop(f"_social_token_{blueprint.name}", None)


@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    scope: list[str]
    profile_path: str
    to_identity: Callable[[dict], Identity | None]


def google_identity(p: dict) -> Identity | None:
    if not p.get("sub"):
        return None
    email = p.get("email")
    return Identity(
        connector="google",
        subject=str(p["sub"]),
        username=(email or "").split("@")[0] or p.get("name") or "google-user",
        email=email,
        email_verified=p.get("email_verified") is True,
        name=p.get("name"),
        amr=("fed",),
    )


def facebook_identity(p: dict) -> Identity | None:
    if not p.get("id"):
        return None
    # Facebook does not say whether an address is verified: treat it as unverified.
    return Identity(
        connector="facebook",
        subject=str(p["id"]),
        username=p.get("name") or "facebook-user",
        email=p.get("email"),
        email_verified=False,
        name=p.get("name"),
        amr=("fed",),
    )


def twitter_identity(body: dict) -> Identity | None:
    p = body.get("data") if isinstance(body.get("data"), dict) else {}
    if not p.get("id"):
        return None
    # X returns confirmed_email only for an address the user has confirmed.
    email = p.get("confirmed_email")
    return Identity(
        connector="twitter",
        subject=str(p["id"]),
        username=p.get("username") or "x-user",
        email=email,
        email_verified=bool(email),
        name=p.get("name"),
        amr=("fed",),
    )


PROVIDERS = {
    "facebook": Provider(
        "facebook",
        "Facebook",
        ["email", "public_profile"],
        "me?fields=id,name,email,picture",
        facebook_identity,
    ),
    # Full scope URLs: Google answers with them, and oauthlib fails on a "changed" scope.
    "google": Provider(
        "google",
        "Google",
        [
            "openid",
            "https://www.googleapis.com/auth/userinfo.email",
            "https://www.googleapis.com/auth/userinfo.profile",
        ],
        "oauth2/v3/userinfo",
        google_identity,
    ),
    "twitter": Provider(
        "twitter",
        "X",
        ["tweet.read", "users.read", "users.email"],
        "2/users/me?user.fields=id,name,username,profile_image_url,confirmed_email",
        twitter_identity,
    ),
}


class SocialConnector:
    """The RedirectConnector for one provider: the login page shows its button."""

    def __init__(self, provider: Provider):
        self.name = provider.name
        self.label = provider.label

    def login_url(self, next_url: str | None = None) -> str:
        return url_for(f"{self.name}.login", next=safe_next(next_url) or None)


def configured(cfg) -> list[str]:
    return [
        name
        for name in PROVIDERS
        if cfg.get(f"{name.upper()}_OAUTH_CLIENT_ID")
        and cfg.get(f"{name.upper()}_OAUTH_CLIENT_SECRET")
    ]


def init_app(app: Flask) -> list[SocialConnector]:
    """Register a Flask-Dance blueprint per configured provider under /login/<name>."""
    # Flask-Dance and oauthlib log client secrets and PKCE verifiers at DEBUG.
    for name in ("flask_dance", "requests_oauthlib", "oauthlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    connectors = []
    for name in configured(app.config):
        bp = _blueprint(app, PROVIDERS[name])
        app.register_blueprint(bp, url_prefix="/login")
        connectors.append(SocialConnector(PROVIDERS[name]))
    return connectors


def _blueprint(app: Flask, provider: Provider) -> OAuth2ConsumerBlueprint:
    cfg = app.config
    key = provider.name.upper()
    if provider.name == "google":
        bp = make_google_blueprint(scope=provider.scope)
    elif provider.name == "facebook":
        bp = make_facebook_blueprint(scope=provider.scope)
    else:  # Flask-Dance 7 has no X preset; X requires PKCE.
        bp = OAuth2ConsumerBlueprint(
            "twitter",
            __name__,
            scope=provider.scope,
            use_pkce=True,
            code_challenge_method="S256",
            base_url=cfg["TWITTER_API_BASE_URL"],
            authorization_url=cfg["TWITTER_AUTHORIZATION_URL"],
            token_url=cfg["TWITTER_TOKEN_URL"],
        )
        bp.from_config["client_id"] = "TWITTER_OAUTH_CLIENT_ID"
        bp.from_config["client_secret"] = "TWITTER_OAUTH_CLIENT_SECRET"
    bp.authorization_url = cfg[f"{key}_AUTHORIZATION_URL"]
    bp.token_url = cfg[f"{key}_TOKEN_URL"]
    bp.base_url = cfg[f"{key}_API_BASE_URL"]
    # Every call to the provider has a timeout: the token exchange here, the profile in
    # finish(). The CA goes with each call: requests lets REQUESTS_CA_BUNDLE override a
    # session's own setting.
    bp.token_url_params = {"timeout": cfg["SOCIAL_TIMEOUT"], "verify": _verify(cfg)}
    bp.storage = RequestStorage()

    @bp.before_request
    def _before():
        if request.endpoint == f"{bp.name}.login":
            # Remember where to go afterwards, and forget any half-finished connect.
            session[NEXT_KEY] = safe_next(request.args.get("next"))
            if session.get(LINK_KEY) != bp.name or not current_user.is_authenticated:
                session.pop(LINK_KEY, None)
            return None
        if request.endpoint == f"{bp.name}.authorized" and "error" not in request.args:
            # Checked here rather than left to Flask-Dance, which silently restarts the
            # dance when the state is missing.
            expected = session.get(f"{bp.name}_oauth_state")
            got = request.args.get("state", "").encode()  # bytes: str must be ASCII here
            if not expected or not hmac.compare_digest(expected.encode(), got):
                return failure(
                    provider,
                    "state_mismatch",
                    400,
                    "This sign-in could not be verified: it did not start here, or "
                    "it was started again meanwhile. Please try again.",
                )
        return None

    @bp.errorhandler(requests.RequestException)  # the token exchange timed out or failed
    def _unreachable(exc):
        return network_failure(provider, exc)

    @bp.errorhandler(OAuth2Error)
    def _oauth(exc):
        return failure(
            provider,
            "token_exchange_failed",
            502,
            f"{provider.label} did not accept the sign-in. Please try again.",
            detail=f"{exc.error}: {exc.description}",
        )

    @bp.errorhandler(Warning)  # oauthlib raises "Scope has changed" as a Warning
    def _warning(exc):
        return failure(
            provider,
            "token_exchange_failed",
            502,
            f"{provider.label} did not accept the sign-in. Please try again.",
            detail=str(exc),
        )

    @bp.errorhandler(ValueError)  # a token response that is not JSON
    def _bad_answer(exc):
        return failure(
            provider,
            "token_exchange_failed",
            502,
            f"{provider.label} gave an answer that could not be read. Please try again.",
            detail=str(exc),
        )

    @oauth_error.connect_via(bp)
    def _provider_error(blueprint, error, error_description=None, error_uri=None):
        if error == "access_denied":
            return failure(
                provider,
                "access_denied",
                403,
                f"You did not allow access at {provider.label}, so you are not "
                "signed in. Nothing was changed.",
            )
        return failure(
            provider,
            "provider_error",
            502,
            f"{provider.label} reported an error ({error}). Please try again later.",
            detail=str(error_description),
        )

    @oauth_authorized.connect_via(bp)
    def _authorized(blueprint, token):
        return finish(provider, blueprint, token)

    return bp


def _verify(cfg) -> str | bool:
    return cfg["SOCIAL_CA_FILE"] or True


def failure(provider: Provider, reason: str, status: int, message: str, detail: str = ""):
    """The page for a failed dance; audited and logged (detail to the log only)."""
    for key in (LINK_KEY, f"{provider.name}_oauth_state", f"{provider.name}_oauth_code_verifier"):
        session.pop(key, None)
    log.warning("%s sign-in failed: %s %s", provider.name, reason, detail)
    audit.record("signin.failure", None, method=provider.name, reason=reason)
    db.session.commit()
    # A Response, not a (body, status) tuple: Flask-Dance ignores anything else.
    return make_response(
        render_template("auth/social_error.html", provider=provider, message=message), status
    )


def network_failure(provider: Provider, exc: requests.RequestException):
    if isinstance(exc, requests.Timeout):
        return failure(
            provider,
            "timeout",
            504,
            f"{provider.label} did not answer in time. Please try again later.",
            detail=str(exc),
        )
    return failure(
        provider,
        "provider_unreachable",
        502,
        f"{provider.label} could not be reached. Please try again later.",
        detail=str(exc),
    )


def finish(provider: Provider, blueprint, token: dict):
    """After the token exchange: read the profile, then sign in, create, or link. The token
    serves this request only and is then forgotten."""
    from identity.auth.signin import SignInRefused, link_identity, sign_in

    try:
        resp = blueprint.session.get(
            provider.profile_path,
            timeout=current_app.config["SOCIAL_TIMEOUT"],
            verify=_verify(current_app.config),
        )
    except requests.RequestException as exc:
        return network_failure(provider, exc)
    try:
        body = resp.json() if resp.ok else None
    except ValueError:
        body = None
    identity = provider.to_identity(body) if isinstance(body, dict) else None
    if identity is None:
        return failure(
            provider,
            "bad_profile",
            502,
            f"{provider.label} did not say who you are. Please try again later.",
            detail=f"profile answer {resp.status_code}",
        )

    linking = session.pop(LINK_KEY, None) == provider.name and current_user.is_authenticated
    next_url = session.pop(NEXT_KEY, None)
    try:
        if linking:
            link_identity(current_user._get_current_object(), identity, provider.label)
        else:
            sign_in(identity, label=provider.label)
    except SignInRefused as refused:
        status = 409 if refused.reason in ("email_in_use", "linked_elsewhere") else refused.status
        return make_response(
            render_template("auth/social_error.html", provider=provider, message=refused.message),
            status,
        )
    if linking:
        flash(f"{provider.label} is connected: you can sign in with it.", "success")
        return redirect(url_for("auth.account"))
    from identity.auth.mfa_views import next_page

    return redirect(next_page(next_url) or next_url or landing())
