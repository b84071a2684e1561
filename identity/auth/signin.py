"""The one funnel: every verified Identity becomes a signed-in account here, and only here."""

from __future__ import annotations

import logging
import secrets
import time

from flask import current_app, session
from flask_login import current_user, login_user, logout_user
from sqlalchemy import delete, or_, update

from identity import audit
from identity.auth import provisioning, sessions
from identity.auth import remember as remember_me
from identity.auth.refusals import BACKEND_DOWN, DIRECTORY_MISCONFIGURED, refuse
from identity.connectors import registry as connectors
from identity.connectors.base import ConnectorError, DirectoryMisconfigured, Identity, LockedOut
from identity.extensions import db
from identity.models import BrowserSession, LinkedIdentity, User
from identity.models.users import utcnow

log = logging.getLogger("identity.auth")


def sign_in(identity: Identity, *, remember: bool = False, label: str | None = None) -> User:
    """Sign the account linked to `identity` in, as a fresh session.

    Records the time (`auth_time`), the methods (`amr`), the connector and a new session
    id (`sid`) in the session, and an audit event. Raises SignInRefused when no account
    is linked or the account is disabled. An account with a second factor, or one that
    IDP_MFA_REQUIRED covers, gets no session yet but a pending second step
    (identity.auth.second_step): the caller sends the browser to it (next_page()).
    """
    link = provisioning.find_link(identity)
    if link is None:
        link = provisioning.first_sign_in(identity, label or identity.connector)
    user = link.user
    policy = connectors.registry().provisioning(identity.connector)
    checked = {}
    if policy == connectors.DIRECTORY:
        provisioning.refresh(user, identity)
        checked["checked_at"] = utcnow()  # the directory just vouched for the entry as it is
    elif not user.disabled:
        # Another way into a directory-linked account: the directory is asked again (at
        # most IDP_LDAP_RECHECK_SECONDS old), and a leaver is disabled right here.
        from identity.oidc import recheck

        try:
            recheck.check(user)
        except LockedOut as exc:
            log.info("directory re-check of %s: %s", user.username, exc)
            refuse("locked_out", identity, user)
        except DirectoryMisconfigured as exc:
            log.error(
                "directory re-check of %s: the directory is misconfigured: %s", user.username, exc
            )
            refuse("misconfigured", identity, user, DIRECTORY_MISCONFIGURED, status=503)
        except ConnectorError as exc:
            log.error("directory re-check of %s failed: %s", user.username, exc)
            refuse("backend_down", identity, user, BACKEND_DOWN, status=503)
    if user.disabled:
        refuse("disabled", identity, user)
    if policy != connectors.DIRECTORY and connectors.registry().asserts_groups(identity.connector):
        provisioning.follow_groups(user, identity)

    # A new session at every sign-in: nothing from before survives into it, and the old
    # cookies, should a copy exist, are dead everywhere.
    _end_this_browser(None)
    session.clear()
    from identity.auth import mfa, second_step

    # Nothing pending is a factor: what is pending (the directory's name, groups) is written
    # with the rest at the commit, in one UPDATE per row.
    with db.session.no_autoflush:
        enrolled = mfa.factors(user)
    # A first factor that is already two (a passkey: possession and user verification,
    # amr "mfa") is not asked again.
    if "mfa" not in identity.amr and (enrolled or mfa.required(user)):
        # No session yet: the second factor (or its enrolment) comes first.
        second_step.hold(user, link, identity, remember=remember, enrol=not enrolled)
        if checked:
            link.write(**checked)
        audit.insert("mfa.asked", user, method=identity.connector, enrol=not enrolled)
        db.session.commit()
        return user
    return _start(
        user,
        link,
        amr=list(identity.amr),
        connector=identity.connector,
        remember=remember,
        **checked,
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
    user: User,
    link: LinkedIdentity,
    *,
    amr: list[str],
    connector: str,
    remember: bool,
    checked_at=None,
) -> User:
    """The session itself, every factor having passed (`checked_at`: the directory has just
    vouched for the link's entry)."""
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
    link.write(last_used_at=now, **({"checked_at": checked_at} if checked_at else {}))
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
    # cookie restored elsewhere (a copy's, since this browser had none). A browser that
    # holds neither has nothing to end.
    ended = [BrowserSession.sid == session["sid"]] if session.get("sid") else []
    if series:
        ended.append(BrowserSession.series == series)
    if ended:
        db.session.execute(delete(BrowserSession).where(or_(*ended)))


def enforce_session_lifetime() -> None:
    """Before each request: a session older than SESSION_LIFETIME (a restored one counts from
    its restoration), signed out of or ended from a list (on any node), is over. With a valid
    remember-me cookie the account is then restored (restore())."""
    if "_user_id" not in session:
        return
    started = session.get("restored_at") or session.get("auth_time")
    sid = session.get("sid")
    user_id = str(session["_user_id"]).partition(".")[0]  # "id.epoch" (the user loader's)
    if (
        not sid
        or started is None
        or time.time() - started > current_app.config["SESSION_LIFETIME"]
        or not sessions.seen(sid, int(user_id) if user_id.isdigit() else None)
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
