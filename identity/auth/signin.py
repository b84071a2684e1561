"""The one funnel: every verified Identity becomes a signed-in account here, and only here."""

from __future__ import annotations

import re
import secrets
import time
from typing import NoReturn

from flask import current_app, session
from flask_login import login_user, logout_user, user_loaded_from_cookie
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from identity import audit
from identity.auth import accounts
from identity.connectors.base import Identity
from identity.extensions import db
from identity.models import EndedSession, LinkedIdentity, User
from identity.models.users import utcnow
from identity.names import fold


class SignInRefused(Exception):
    """A verified identity that may not sign in; `reason` is a code for the audit log."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def sign_in(identity: Identity, *, remember: bool = False, label: str | None = None) -> User:
    """Sign the account linked to `identity` in, as a fresh session.

    Records the time (`auth_time`), the methods (`amr`), the connector and a new session
    id (`sid`) in the session, and an audit event. Raises SignInRefused when no account
    is linked or the account is disabled.
    """
    link = _find_link(identity)
    if link is None:
        link = _first_sign_in(identity, label or identity.connector)
    user = link.user
    if identity.connector in current_app.extensions["idp.jit_connectors"]:
        refresh(user, identity)
    if user.disabled:
        _refuse("disabled", identity, user)

    # A new session at every sign-in: nothing from before survives into it, and the old
    # cookie, should a copy exist, is dead everywhere.
    _end_session_id(session.get("sid"))
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
    audit.insert("signin.success", user, method=identity.connector)
    db.session.commit()
    return user


def sign_out() -> None:
    """End the session and the remember-me cookie; its apps' tokens are revoked and apps with
    a back-channel logout endpoint are told."""
    from identity.oidc.logout import end_sso_session

    end_sso_session()
    _end_session_id(session.get("sid"))
    db.session.commit()
    session.clear()
    # After clear(): logout_user() leaves the flag that makes Flask-Login delete the cookie.
    logout_user()


# Asked before every signed-in request: built once, run as Core (no object is needed).
IS_ENDED = select(EndedSession.sid).where(EndedSession.sid == bindparam("sid"))


def enforce_session_lifetime() -> None:
    """Before each request: a session older than SESSION_LIFETIME, or signed out of (on any
    node), is over. With a valid remember-me cookie Flask-Login then restores the account,
    as a not-fresh session."""
    if "_user_id" not in session:
        return
    started = session.get("auth_time") or session.get("restored_at")
    sid = session.get("sid")
    if (
        started is None
        or time.time() - started > current_app.config["SESSION_LIFETIME"]
        or (sid and db.session.connection().execute(IS_ENDED, {"sid": sid}).first())
    ):
        session.clear()


def _end_session_id(sid: str | None) -> None:
    """Remember `sid` as signed out until it would have expired anyway (the caller commits);
    forget those past that."""
    if not sid:
        return
    now = int(time.time())
    db.session.execute(delete(EndedSession).where(EndedSession.expires_at < now))
    if db.session.get(EndedSession, sid) is None:
        db.session.add(
            EndedSession(sid=sid, expires_at=now + current_app.config["SESSION_LIFETIME"])
        )


@user_loaded_from_cookie.connect
def _restored(_app, user: User) -> None:
    # A new SSO session (its own sid for ID and logout tokens); auth_time is not known.
    session["restored_at"] = int(time.time())
    session["sid"] = secrets.token_urlsafe(16)


def _first_sign_in(identity: Identity, label: str) -> LinkedIdentity:
    """An identity seen for the first time: a new account, or (social, opted in, verified
    e-mail) the account with that address. Never joined by an unverified address."""
    if identity.connector in current_app.extensions["idp.jit_connectors"]:
        return provision(identity)
    if identity.connector not in current_app.extensions["idp.social_connectors"]:
        _refuse("no_account", identity, None)
    owner = None
    if identity.email:
        owner = db.session.scalar(select(User).where(User.email_key == fold(identity.email)))
    if owner is None:
        # Only a verified address is kept: an unverified one could be someone else's, who
        # would later reset "their" password into an account the provider user controls.
        return provision(identity, keep_email=identity.email_verified)
    if current_app.config["SOCIAL_AUTO_LINK_VERIFIED_EMAIL"] and identity.email_verified:
        return _add_link(owner, identity, auto=True)
    _refuse(
        "email_in_use",
        identity,
        None,
        f"An account already uses the e-mail address {identity.email}. If it is yours, "
        f"sign in to it first, then connect {label} from your account page.",
    )


def link_identity(user: User, identity: Identity, label: str) -> User:
    """Connect `identity` to the signed-in `user` (from the account page)."""
    link = _find_link(identity)
    if link is not None and link.user_id != user.id:
        _refuse(
            "linked_elsewhere",
            identity,
            user,
            f"This {label} account is already connected to another account here. "
            "Disconnect it there first.",
        )
    if link is None:
        _add_link(user, identity, auto=False)
    return user


def _add_link(user: User, identity: Identity, *, auto: bool) -> LinkedIdentity:
    link = LinkedIdentity(user_id=user.id, connector=identity.connector, subject=identity.subject)
    db.session.add(link)
    audit.record("link", user, method=identity.connector, auto=auto)
    try:
        db.session.commit()
    except IntegrityError:
        # The same (connector, subject) was linked concurrently: at most one account has it.
        db.session.rollback()
        existing = _find_link(identity)
        if existing is None or existing.user_id != user.id:
            _refuse(
                "linked_elsewhere",
                identity,
                user,
                "This account is already connected to another account here.",
            )
        return existing
    return link


def provision(identity: Identity, *, keep_email: bool = True) -> LinkedIdentity:
    """A new account linked to `identity`, with no local password (committed).

    The username is the identity's, made safe and unique; the e-mail address is kept only
    when no other account uses it (accounts are never joined by e-mail).
    """
    base = local_username(identity.username)
    for attempt in range(3):
        user = User(
            username=_unique_username(base),
            name=identity.name,
            password_hash=None,
            groups=list(identity.groups),
        )
        if keep_email and identity.email and not accounts.email_taken(identity.email):
            user.set_email(identity.email)
            user.email_verified = identity.email_verified
        try:
            db.session.add(user)
            db.session.flush()
            link = LinkedIdentity(
                user_id=user.id, connector=identity.connector, subject=identity.subject
            )
            db.session.add(link)
            audit.record("register", user, method=identity.connector, jit=True)
            db.session.commit()
            return link
        except IntegrityError:
            # A concurrent first sign-in of the same person won: use its account. Or another
            # account took the username or address meanwhile: try again, now seeing it.
            db.session.rollback()
            existing = _find_link(identity)
            if existing is not None:
                return existing
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def refresh(user: User, identity: Identity) -> None:
    """Bring name, e-mail and groups up to date with the directory (the caller commits)."""
    user.name = identity.name
    user.groups = list(identity.groups)
    wanted = fold(identity.email) if identity.email else None
    if wanted != user.email_key:
        if wanted is None or not accounts.email_taken(identity.email):
            user.set_email(identity.email)
            user.email_verified = identity.email_verified if identity.email else False


def local_username(name: str) -> str:
    """A directory or provider name as a username of ours: lower case, [a-z0-9._-]."""
    safe = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return safe[:56] or "user"


def _unique_username(base: str) -> str:
    candidate, n = base, 1
    while accounts.find(candidate, by_email=False) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


# Every sign-in looks its link up: built once, with the account in the same query.
LINK_BY_SUBJECT = (
    select(LinkedIdentity)
    .where(
        LinkedIdentity.connector == bindparam("connector"),
        LinkedIdentity.subject == bindparam("subject"),
    )
    .options(joinedload(LinkedIdentity.user))
)


def _find_link(identity: Identity) -> LinkedIdentity | None:
    return db.session.scalar(
        LINK_BY_SUBJECT, {"connector": identity.connector, "subject": identity.subject}
    )


_MESSAGES = {
    "no_account": "No account is linked to this sign-in.",
    "disabled": "This account is disabled. Ask an administrator.",
}


def _refuse(
    reason: str, identity: Identity, user: User | None, message: str | None = None
) -> NoReturn:
    audit.record("signin.failure", user, method=identity.connector, reason=reason)
    db.session.commit()
    raise SignInRefused(reason, message or _MESSAGES[reason])
