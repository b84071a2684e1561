"""The one funnel: every verified Identity becomes a signed-in account here, and only here."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import NoReturn

from flask import current_app, session
from flask_login import current_user, login_user, logout_user
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from identity import audit
from identity.auth import accounts, sessions
from identity.auth import remember as remember_me
from identity.connectors import registry as connectors
from identity.connectors.base import ConnectorError, DirectoryMisconfigured, Identity, LockedOut
from identity.extensions import db
from identity.models import BrowserSession, LinkedIdentity, User
from identity.models.users import utcnow
from identity.names import fold

log = logging.getLogger("identity.auth")


# What people see when the directory cannot be asked (login form, the re-check of a
# directory-linked account signing in another way, the console): down, or, when its answer
# says the service's own settings are wrong, misconfigured (waiting will not help).
BACKEND_DOWN = (
    "The company directory is unavailable, so directory accounts cannot sign in right now. "
    "Please try again in a few minutes."
)
DIRECTORY_MISCONFIGURED = (
    "Sign-in with the company directory is misconfigured on this service, so directory "
    "accounts cannot sign in. Please tell your administrators: trying again will not help "
    "until they fix it."
)


class SignInRefused(Exception):
    """A verified identity that may not sign in; `reason` is a code for the audit log,
    `status` the HTTP status of the page that says so."""

    def __init__(self, reason: str, message: str, status: int = 403):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


def sign_in(identity: Identity, *, remember: bool = False, label: str | None = None) -> User:
    """Sign the account linked to `identity` in, as a fresh session.

    Records the time (`auth_time`), the methods (`amr`), the connector and a new session
    id (`sid`) in the session, and an audit event. Raises SignInRefused when no account
    is linked or the account is disabled. An account with a second factor, or one that
    IDP_MFA_REQUIRED covers, gets no session yet but a pending second step
    (identity.auth.second_step): the caller sends the browser to it (next_page()).
    """
    link = _find_link(identity)
    if link is None:
        link = _first_sign_in(identity, label or identity.connector)
    user = link.user
    policy = connectors.registry().provisioning(identity.connector)
    if policy == connectors.DIRECTORY:
        refresh(user, identity)
        link.checked_at = utcnow()  # the directory just vouched for the entry as it is
    elif not user.disabled:
        # Another way into a directory-linked account: the directory is asked again (at
        # most IDP_LDAP_RECHECK_SECONDS old), and a leaver is disabled right here.
        from identity.oidc import recheck

        try:
            recheck.check(user)
        except LockedOut as exc:
            log.info("directory re-check of %s: %s", user.username, exc)
            _refuse("locked_out", identity, user)
        except DirectoryMisconfigured as exc:
            log.error(
                "directory re-check of %s: the directory is misconfigured: %s", user.username, exc
            )
            _refuse("misconfigured", identity, user, DIRECTORY_MISCONFIGURED, status=503)
        except ConnectorError as exc:
            log.error("directory re-check of %s failed: %s", user.username, exc)
            _refuse("backend_down", identity, user, BACKEND_DOWN, status=503)
    if user.disabled:
        _refuse("disabled", identity, user)

    # A new session at every sign-in: nothing from before survives into it, and the old
    # cookies, should a copy exist, are dead everywhere.
    _end_this_browser(None)
    session.clear()
    from identity.auth import mfa, second_step

    enrolled = mfa.factors(user)
    # A first factor that is already two (a passkey: possession and user verification,
    # amr "mfa") is not asked again.
    if "mfa" not in identity.amr and (enrolled or mfa.required(user)):
        # No session yet: the second factor (or its enrolment) comes first.
        second_step.hold(user, link, identity, remember=remember, enrol=not enrolled)
        audit.insert("mfa.asked", user, method=identity.connector, enrol=not enrolled)
        db.session.commit()
        return user
    return _start(
        user, link, amr=list(identity.amr), connector=identity.connector, remember=remember
    )


def complete(state: dict, factor_amr: list[str]) -> User | None:
    """Finish the sign-in held by the second step `state`, now that a second factor passed:
    the session's methods are the first factor's and `factor_amr`. None when the account
    was disabled, or its sessions ended, meanwhile."""
    from identity.auth import second_step

    user = db.session.get(User, state["uid"])
    link = db.session.get(LinkedIdentity, state["link"])
    second_step.drop()
    if user is None or link is None or user.disabled or user.session_epoch != state["epoch"]:
        return None
    amr = [*state["amr"], *(m for m in factor_amr if m not in state["amr"])]
    return _start(user, link, amr=amr, connector=state["connector"], remember=state["remember"])


def _start(
    user: User, link: LinkedIdentity, *, amr: list[str], connector: str, remember: bool
) -> User:
    """The session itself, every factor having passed."""
    session.clear()
    # A browser session: it ends when the browser closes, and at SESSION_LIFETIME at the latest.
    session.permanent = False
    login_user(user, fresh=True)
    auth_time = int(time.time())
    session["auth_time"] = auth_time
    session["amr"] = list(amr)
    session["connector"] = connector
    session["sid"] = secrets.token_urlsafe(16)
    series = None
    if remember:
        series = remember_me.issue(user, auth_time=auth_time, amr=amr, connector=connector)
    elif remember_me.presented_series():
        remember_me.forget()
    sessions.start(user, session["sid"], auth_time=auth_time, connector=connector, series=series)

    now = utcnow()
    user.last_login_at = now
    link.last_used_at = now
    audit.insert("signin.success", user, method=connector)
    db.session.commit()
    return user


def sign_out() -> None:
    """End the session and the remember-me cookie; its apps' tokens are revoked and apps with
    a back-channel logout endpoint are told."""
    user = current_user._get_current_object() if current_user.is_authenticated else None
    _end_this_browser(user)
    db.session.commit()
    session.clear()
    # After clear(): logout_user() leaves the flag that makes Flask-Login delete the cookie.
    logout_user()


def _end_this_browser(user: User | None) -> None:
    """End what this browser holds, on every node: its session record and its remember-me
    series, with every session that series restored. With `user` (signing out), their apps'
    tokens are revoked too; signing in again over a session leaves those to their lifetime."""
    series = remember_me.presented_series()
    sids = {session.get("sid")}
    if user is not None and series:
        sids |= sessions.of_series(user, series)
    remember_me.end(series)
    if user is not None:
        sessions.end(user, sids, reason="signout")
        return
    # Whoever's they are: this browser's old session, and any session its remember-me
    # cookie restored elsewhere (a copy's, since this browser had none).
    ended = BrowserSession.sid == session.get("sid")
    if series:
        ended = ended | (BrowserSession.series == series)
    db.session.execute(delete(BrowserSession).where(ended))


def enforce_session_lifetime() -> None:
    """Before each request: a session older than SESSION_LIFETIME (a restored one counts from
    its restoration), signed out of or ended from a list (on any node), is over. With a valid
    remember-me cookie the account is then restored (restore())."""
    if "_user_id" not in session:
        return
    started = session.get("restored_at") or session.get("auth_time")
    sid = session.get("sid")
    if (
        not sid
        or started is None
        or time.time() - started > current_app.config["SESSION_LIFETIME"]
        or not sessions.seen(sid)
    ):
        session.clear()


def restore(cookie: str) -> User | None:
    """Flask-Login's remember loader: a remember-me cookie becomes a new, not fresh, session
    (its own sid) that keeps the time and methods of the sign-in it remembers, so that
    `max_age` and `auth_time` tell the truth. None when the cookie restores nothing."""
    remembered = remember_me.use(cookie)
    if remembered is None:
        return None
    user = remembered.user
    # A directory-linked account is read again before it is let back in, as at a sign-in:
    # a leaver is disabled here; when the directory cannot tell, nobody is restored on old
    # data (the device stays remembered for when it answers again).
    from identity.oidc import recheck

    try:
        recheck.check(user)
    except ConnectorError as exc:
        log.error("directory re-check of %s failed: %s", user.username, exc)
        db.session.commit()  # the replaced secret, which this response's cookie carries
        return None
    if user.disabled:
        return remember_me.forget()
    session.clear()
    session.permanent = False
    login_user(user, fresh=False)
    now = int(time.time())
    session["auth_time"] = remembered.auth_time
    session["amr"] = remembered.amr
    session["connector"] = remembered.connector
    session["restored_at"] = now
    session["sid"] = secrets.token_urlsafe(16)
    # The device's earlier session lost its cookie (that is why this one is restored): it
    # is forgotten, so that one device is one line on the account page.
    db.session.execute(
        delete(BrowserSession).where(
            BrowserSession.user_id == user.id, BrowserSession.series == remembered.series
        )
    )
    sessions.start(
        user,
        session["sid"],
        auth_time=remembered.auth_time,
        connector=remembered.connector,
        series=remembered.series,
    )
    audit.insert("signin.restored", user, method=remembered.connector)
    db.session.commit()
    return user


def keep_this_session(user: User) -> None:
    """After the account's own password change ended every session and remember-me cookie
    (user.end_sessions(keep_sid=this one)): this session goes on under the new epoch, and
    a remembered device gets a new remember-me cookie."""
    login_user(user, fresh=True)
    if remember_me.presented_series():
        series = remember_me.issue(
            user,
            auth_time=session["auth_time"],
            amr=session.get("amr") or [],
            connector=session.get("connector") or "local",
        )
        db.session.execute(
            update(BrowserSession).where(BrowserSession.sid == session["sid"]).values(series=series)
        )
    db.session.commit()


def _first_sign_in(identity: Identity, label: str) -> LinkedIdentity:
    """An identity seen for the first time, as its connector's provisioning policy says
    (identity.connectors.registry): a new account, or (EMAIL, opted in, verified e-mail)
    the account with that address. Never joined by an unverified address, on either side."""
    policy = connectors.registry().provisioning(identity.connector)
    if policy == connectors.DIRECTORY:
        return provision(identity)
    if policy != connectors.EMAIL:
        _refuse("no_account", identity, None)
    owner = None
    if identity.email:
        owner = db.session.scalar(select(User).where(User.email_key == fold(identity.email)))
    if owner is None:
        # Only a verified address is kept: an unverified one could be someone else's, who
        # would later reset "their" password into an account the provider user controls.
        return provision(identity, keep_email=identity.email_verified)
    # The account's own address must have been verified too: anyone can register with
    # someone else's address, and would then receive that person's sign-ins.
    if (
        current_app.config["SOCIAL_AUTO_LINK_VERIFIED_EMAIL"]
        and identity.email_verified
        and owner.email_verified
    ):
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
    if address_unproven(user):
        _refuse("email_unverified", identity, user, unproven_message(user, label))
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


def address_unproven(user: User) -> bool:
    """Whether the account's address awaits verification. Such an account gains no new way to
    sign in: whoever registered it may not own the address, and a sign-in method they added
    would survive the real owner's password reset (a "trojan identifier")."""
    return bool(
        current_app.config["REGISTRATION_EMAIL_VERIFICATION"]
        and user.email
        and not user.email_verified
    )


def unproven_message(user: User, label: str) -> str:
    return (
        f"Verify your e-mail address {user.email} first (with the link we sent, or a new one "
        f"from your account page), then connect {label}."
    )


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
            group_dns=list(identity.group_dns),
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
            # The name it has there: the admin page says why ours differs (taken here).
            audit.record(
                "register",
                user,
                method=identity.connector,
                jit=True,
                remote_username=identity.username,
            )
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
    from identity.oidc import recheck

    recheck.apply(user, identity)


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
    "locked_out": (
        "Your directory account is locked after too many wrong passwords. It unlocks by "
        "itself after a while, or ask an administrator."
    ),
}


def _refuse(
    reason: str,
    identity: Identity,
    user: User | None,
    message: str | None = None,
    *,
    status: int = 403,
) -> NoReturn:
    audit.record("signin.failure", user, method=identity.connector, reason=reason)
    db.session.commit()
    raise SignInRefused(reason, message or _MESSAGES[reason], status)
