"""The one funnel: every verified Identity becomes a signed-in account here, and only here."""

from __future__ import annotations

import secrets
import time

from flask import current_app, session
from flask_login import login_user, logout_user, user_loaded_from_cookie
from sqlalchemy import select

from identity import audit
from identity.connectors.base import Identity
from identity.extensions import db
from identity.models import LinkedIdentity, User
from identity.models.users import utcnow


class SignInRefused(Exception):
    """A verified identity that may not sign in; `reason` is a code for the audit log."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def sign_in(identity: Identity, *, remember: bool = False) -> User:
    """Sign the account linked to `identity` in, as a fresh session.

    Records the time (`auth_time`), the methods (`amr`), the connector and a new session
    id (`sid`) in the session, and an audit event. Raises SignInRefused when no account
    is linked or the account is disabled.
    """
    link = db.session.scalar(
        select(LinkedIdentity).where(
            LinkedIdentity.connector == identity.connector,
            LinkedIdentity.subject == identity.subject,
        )
    )
    if link is None:
        # Just-in-time accounts for directory and social sign-in plug in here.
        _refuse("no_account", identity, None)
    user = link.user
    if user.disabled:
        _refuse("disabled", identity, user)

    # A new session at every sign-in: nothing from before survives into it.
    session.clear()
    # A browser session: it ends when the browser closes, and at SESSION_LIFETIME at the latest.
    session.permanent = False
    login_user(user, remember=remember, fresh=True)
    session["auth_time"] = int(time.time())
    session["amr"] = list(identity.amr)
    session["connector"] = identity.connector
    session["sid"] = secrets.token_urlsafe(16)

    now = utcnow()
    user.last_login_at = now
    link.last_used_at = now
    audit.record("signin.success", user, method=identity.connector)
    db.session.commit()
    return user


def sign_out() -> None:
    """End the session and the remember-me cookie."""
    session.clear()
    # After clear(): logout_user() leaves the flag that makes Flask-Login delete the cookie.
    logout_user()


def enforce_session_lifetime() -> None:
    """Before each request: a session older than SESSION_LIFETIME is over. With a valid
    remember-me cookie Flask-Login then restores the account, as a not-fresh session."""
    started = session.get("auth_time") or session.get("restored_at")
    if "_user_id" in session and (
        started is None or time.time() - started > current_app.config["SESSION_LIFETIME"]
    ):
        session.clear()


@user_loaded_from_cookie.connect
def _restored(_app, user: User) -> None:
    session["restored_at"] = int(time.time())


_MESSAGES = {
    "no_account": "No account is linked to this sign-in.",
    "disabled": "This account is disabled. Ask an administrator.",
}


def _refuse(reason: str, identity: Identity, user: User | None) -> None:
    audit.record("signin.failure", user, method=identity.connector, reason=reason)
    db.session.commit()
    raise SignInRefused(reason, _MESSAGES[reason])
