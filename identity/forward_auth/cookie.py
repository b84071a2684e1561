"""The forward-auth cookie: set for the whole parent domain, it names a server-side session
(a browser_sessions row), so signing out, ending the session, a password change or disabling
the account ends it too."""

from __future__ import annotations

import time

from flask import Flask, Response, after_this_request, current_app, request, session
from flask_login import user_logged_out
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Row, bindparam, select

from identity.extensions import db
from identity.models import BrowserSession, LinkedIdentity, User

# __Secure-: browsers take it only over HTTPS with the Secure attribute (a __Host- name
# cannot have a Domain).
NAME = "__Secure-idp-forward-auth"
SALT = "identity.forward-auth"
LONGEST = 1024

# Asked at every request a proxy checks: one query for the columns needed, built once; with
# the account's directory link, if any, and when its entry was last read (forward_auth.
# directory decides from these whether to read it again).
LIVE_USER = (
    select(
        User.id,
        User.username,
        User.email,
        User.email_verified,
        User.name,
        User.groups,
        User.disabled,
        User.session_epoch,
        LinkedIdentity.id.label("link_id"),
        LinkedIdentity.checked_at,
    )
    .join(BrowserSession, BrowserSession.user_id == User.id)
    .outerjoin(
        LinkedIdentity,
        (LinkedIdentity.user_id == User.id) & (LinkedIdentity.connector == "ldap"),
    )
    .where(
        BrowserSession.sid == bindparam("sid"),
        BrowserSession.user_id == bindparam("uid"),
        BrowserSession.expires_at > bindparam("now"),
    )
)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def issue(response: Response, user: User) -> None:
    """Give this browser's session (its sid, account, epoch and sign-in methods) to every
    host under the domain. A browser-session cookie, like this service's own."""
    value = _serializer().dumps(
        {
            "sid": session["sid"],
            "uid": user.id,
            "ep": user.session_epoch,
            "amr": list(session.get("amr") or []),
        }
    )
    response.set_cookie(NAME, value, **_attributes())


def expire(response: Response) -> None:
    """Delete the cookie in the browser (at sign-out): a deletion counts only with the
    Domain, Path, Secure and SameSite it was set with."""
    response.delete_cookie(NAME, **_attributes())


def expire_at_sign_out(app: Flask) -> None:
    """Every sign-out (identity.auth.signin.sign_out, which sits below this package: /logout
    and /end_session) deletes the cookie too, through Flask-Login's signal: ending the
    server-side session alone would leave the browser holding a dead cookie."""
    user_logged_out.connect(_signed_out, app)


def _signed_out(_app: Flask, **_extra) -> None:
    if not current_app.config["FORWARD_AUTH_COOKIE_DOMAIN"]:
        return

    @after_this_request
    def deleted(response: Response) -> Response:
        expire(response)
        return response


def _attributes() -> dict:
    return {
        "domain": current_app.config["FORWARD_AUTH_COOKIE_DOMAIN"],
        "path": "/",
        "secure": True,
        "httponly": True,
        "samesite": "Lax",
    }


def read() -> tuple[Row, list[str]] | None:
    """The account (id, username, email, email_verified, name, groups, and its directory
    link's link_id and checked_at) and sign-in methods of the request's cookie, when its
    session is still live on the server; None otherwise."""
    raw = request.cookies.get(NAME)
    if not raw or len(raw) > LONGEST:
        return None
    try:
        data = _serializer().loads(raw, max_age=current_app.config["SESSION_LIFETIME"])
    except BadSignature:  # also too old (SignatureExpired)
        return None
    if not isinstance(data, dict):
        return None
    sid, uid, epoch, amr = data.get("sid"), data.get("uid"), data.get("ep"), data.get("amr")
    if not (
        isinstance(sid, str)
        and isinstance(uid, int)
        and isinstance(epoch, str)
        and isinstance(amr, list)
    ):
        return None
    user = db.session.execute(LIVE_USER, {"sid": sid, "uid": uid, "now": int(time.time())}).first()
    if user is None or user.disabled or user.session_epoch != epoch:
        return None
    return user, [m for m in amr if isinstance(m, str)]
