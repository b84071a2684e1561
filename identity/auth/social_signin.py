"""Signing in with Facebook, Google or X: the callbacks of the providers' Flask-Dance
blueprints (identity.connectors.social). A profile is signed in (or linked to the signed-in
account) through the funnel; every failure is a clear, audited page with nothing stored."""

from __future__ import annotations

import hmac
import logging

import requests
from flask import (
    Flask,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_dance.consumer import OAuth2ConsumerBlueprint, oauth_authorized, oauth_error
from flask_login import current_user
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from identity import audit
from identity.auth.mfa_views import next_page
from identity.auth.signin import SignInRefused, link_identity, sign_in
from identity.connectors import social
from identity.connectors.social import (
    LINK_KEY,
    NEXT_KEY,
    PROVIDERS,
    Provider,
    SocialConnector,
    configured,
    verify,
)
from identity.extensions import db
from identity.security import landing, safe_next

log = logging.getLogger("identity.social")


def init_app(app: Flask) -> list[SocialConnector]:
    """Register a Flask-Dance blueprint per configured provider under /login/<name>, with
    these callbacks; the connectors are the login page's buttons."""
    # Flask-Dance and oauthlib log client secrets and PKCE verifiers at DEBUG.
    for name in ("flask_dance", "requests_oauthlib", "oauthlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    connectors = []
    for name in configured(app.config):
        bp = social.blueprint(app, PROVIDERS[name])
        _callbacks(bp, PROVIDERS[name])
        app.register_blueprint(bp, url_prefix="/login")
        connectors.append(SocialConnector(PROVIDERS[name]))
    return connectors


def _callbacks(bp: OAuth2ConsumerBlueprint, provider: Provider) -> None:
    """The dance's checks and ends: the state before the callback, each kind of failure as
    a page, and the profile to finish() once the token is in."""

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
    try:
        resp = blueprint.session.get(
            provider.profile_path,
            timeout=current_app.config["SOCIAL_TIMEOUT"],
            verify=verify(current_app.config),
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
    return redirect(next_page(next_url) or next_url or landing())
