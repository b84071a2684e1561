"""The two routes of an upstream OpenID provider (/login/oidc/<id> and its callback), and the
one function that hands a redirect connector's Identity to the funnel and words its pages."""

from __future__ import annotations

import logging

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user

from identity import audit
from identity.connectors.oidc_upstream import UpstreamConnector, UpstreamFailure
from identity.connectors.social import LINK_KEY, NEXT_KEY
from identity.extensions import db
from identity.security import landing, safe_next

log = logging.getLogger("identity.oidc_upstream")

bp = Blueprint("oidc_upstream", __name__, url_prefix="/login/oidc")


def _connector(upstream: str) -> UpstreamConnector:
    for c in current_app.extensions["idp.redirect_connectors"]:
        if isinstance(c, UpstreamConnector) and c.upstream.id == upstream:
            return c
    abort(404)


@bp.get("/<upstream>")
def login(upstream: str):
    connector = _connector(upstream)
    # Where to go afterwards; a connect started from the account page survives only when
    # it is for this connector and someone is signed in.
    session[NEXT_KEY] = safe_next(request.args.get("next"))
    if session.get(LINK_KEY) != connector.name or not current_user.is_authenticated:
        session.pop(LINK_KEY, None)
    try:
        return connector.start()
    except UpstreamFailure as failed:
        return failure_page(connector, failed)


@bp.get("/<upstream>/callback")
def callback(upstream: str):
    connector = _connector(upstream)
    try:
        identity = connector.finish()
    except UpstreamFailure as failed:
        return failure_page(connector, failed)
    return complete(connector, identity)


def complete(connector, identity):
    """A redirect connector's verified Identity: sign in (with the second step when the
    account has one), create, or connect to the signed-in account (started from the
    account page); the refusals as the connector's error page."""
    from identity.auth.mfa_views import next_page
    from identity.auth.signin import SignInRefused, link_identity, sign_in

    linking = session.pop(LINK_KEY, None) == connector.name and current_user.is_authenticated
    next_url = session.pop(NEXT_KEY, None)
    try:
        if linking:
            link_identity(current_user._get_current_object(), identity, connector.label)
        else:
            sign_in(identity, label=connector.label)
    except SignInRefused as refused:
        status = 409 if refused.reason in ("email_in_use", "linked_elsewhere") else refused.status
        return _page(connector, refused.message, status)
    if linking:
        flash(f"{connector.label} is connected: you can sign in with it.", "success")
        return redirect(url_for("auth.account"))
    return redirect(next_page(next_url) or next_url or landing())


def failure_page(connector, failed: UpstreamFailure):
    """The page for a sign-in that did not complete; audited, logged (detail to the log
    only), and nothing else stored."""
    session.pop(LINK_KEY, None)
    log.warning("%s sign-in failed: %s %s", connector.name, failed.reason, failed.detail)
    audit.record("signin.failure", None, method=connector.name, reason=failed.reason)
    db.session.commit()
    return _page(connector, failed.message, failed.status)


def _page(connector, message: str, status: int):
    return render_template("auth/social_error.html", provider=connector, message=message), status
