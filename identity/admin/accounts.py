"""Accounts, administered: finding them, and the operations the console and the CLI share.

Every operation records an audit event `admin.user_*` with who did it (`by`, the admin's
username, in the console) and where (`via`: console or cli); never a password or a link.
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import Future
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, or_, select, update

from identity import audit, mail
from identity.auth import accounts, password_check, reset
from identity.connectors import registry
from identity.connectors.base import ConnectorError
from identity.extensions import db
from identity.forms import BAD_CHARS
from identity.models import LinkedIdentity, PasswordReset, User
from identity.models.users import utcnow
from identity.names import fold
from identity.passwords import policy_errors

PER_PAGE = 50
MAX_SEARCH = 200


class Refused(Exception):
    """An operation that may not happen in the account's present state; `message` says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


MAX_ID = 2**31 - 1  # an INTEGER column: PostgreSQL refuses to compare with more


class NotFound(Exception):
    """No account has the id asked for."""


def label(connector: str) -> str:
    return registry.label(connector)


def _who(by: str | None, via: str) -> dict:
    return {"by": by, "via": via} if by else {"via": via}


# -- finding ------------------------------------------------------------------------------


def by_id(user_id: int) -> User:
    """The account with this id (from a page's address); NotFound when there is none."""
    user = db.session.get(User, user_id) if user_id <= MAX_ID else None
    if user is None:
        raise NotFound(f"There is no user with id {user_id}.")
    return user


def search_query(text: str | None):
    """Accounts whose username, e-mail address or name contains `text`, case-insensitively,
    by username."""
    query = select(User)
    text = (text or "").strip().lower()
    if text:
        query = query.where(
            or_(
                User.username.contains(text, autoescape=True),
                User.email_key.contains(text, autoescape=True),
                func.lower(User.name).contains(text, autoescape=True),
            )
        )
    return query.order_by(User.username)


def search(text: str | None, page: int = 1, per_page: int = PER_PAGE) -> tuple[list[User], int]:
    """One page of matching accounts, and how many match in all."""
    query = search_query(text)
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    users = db.session.scalars(query.offset((page - 1) * per_page).limit(per_page)).all()
    return list(users), total


def details(user: User) -> dict:
    """Everything an admin sees about an account (the CLI's `user show --json`)."""

    def iso(t):
        return t.isoformat(timespec="seconds") + "Z" if t else None

    return {
        **user.as_dict(),
        "email_verified": user.email_verified,
        "administrator": user.is_administrator,
        "last_login_at": iso(user.last_login_at),
        "password_changed_at": iso(user.password_changed_at),
        "has_password": user.password_hash is not None,
        "second_factors": factors(user),
        "links": [
            {
                "connector": link.connector,
                "label": label(link.connector),
                "created_at": iso(link.created_at),
                "last_used_at": iso(link.last_used_at),
            }
            for link in user.links
        ],
    }


def factors(user: User) -> list[str]:
    """The second factors `user` has (identity.auth.mfa), by name."""
    from identity.auth import mfa

    return mfa.factors(user)


IN_DIRECTORY = (
    "A person in the company directory has this username and signs in with it: a local "
    "account would take it from them. Choose another."
)


def directory_name_problem(username: str, account: User | None = None) -> str | None:
    """Why `username` may not name a local account (or `account`, renamed), as registration
    decides it (auth.password_check.directory_has): a directory person has it, or the
    directory cannot say. None when the name is free there, or is the name of `account`'s
    own directory entry (a directory-linked account may take its entry's name back)."""
    try:
        taken = password_check.directory_has(username)
        if taken and account is not None:
            taken = not _own_entry_name(account, username)
    except ConnectorError as exc:
        logging.getLogger("identity.admin").error(
            "the directory cannot check the username %r: %s", username, exc
        )
        return password_check.DIRECTORY_UNCHECKED
    return IN_DIRECTORY if taken else None


def _own_entry_name(account: User, username: str) -> bool:
    """Whether `username` is the name of the directory entry `account` is linked to (read
    now by its stable id). Raises ConnectorError."""
    from identity.oidc import recheck

    link, directory = recheck.directory_link(account), recheck.connector()
    if link is None or directory is None:
        return False
    found = directory.lookup(link.subject)
    return found.identity is not None and fold(found.identity.username) == fold(username)


# -- operations ---------------------------------------------------------------------------


def create(
    username: str,
    email: str,
    *,
    name: str | None = None,
    admin: bool = False,
    password: str | None = None,
    by: str | None = None,
    via: str = "console",
) -> tuple[User, Future | None]:
    """A new local account, with `password`, or (None) with none yet and a link e-mailed to
    choose one. The caller has checked the input. Raises IntegrityError when the username or
    e-mail address was taken meanwhile."""
    user = accounts.create_local(username, email, password, admin=admin, name=name)
    audit.record(
        "admin.user_created",
        user,
        admin=admin,
        setup="password" if password is not None else "reset_link",
        **_who(by, via),
    )
    db.session.commit()
    sent = None if password is not None else send_reset_link(user, by=by, via=via, welcome=True)
    return user, sent


def disable(user: User, *, by: str | None = None, via: str = "console") -> int:
    """Disable the account: its sessions end, its tokens are revoked, its apps are told.
    Returns how many back-channel logouts were sent."""
    from identity.oidc.logout import disable_account

    return disable_account(user, "admin.user_disabled", **_who(by, via))


def enable(user: User, *, by: str | None = None, via: str = "console") -> None:
    user.disabled = False
    audit.record("admin.user_enabled", user, **_who(by, via))
    db.session.commit()


def password_problems(user: User, password: str) -> list[str]:
    if BAD_CHARS.search(password):
        return ["The password contains control characters."]
    return policy_errors(password, user.username, user.email)


def set_password(user: User, password: str, *, by: str | None = None, via: str = "console") -> int:
    """Set a new local password (the caller has checked the policy): outstanding reset links
    die, every session ends, tokens are revoked. An account without a local password gets
    one as a new way to sign in. Returns how many back-channel logouts were sent."""
    from identity.oidc.logout import end_other_sessions

    accounts.set_password(user, password)
    added = not any(link.connector == "local" for link in user.links)
    if added:
        db.session.add(LinkedIdentity(user_id=user.id, connector="local", subject=str(user.id)))
    _expire_reset_links(user)
    audit.record("admin.user_password_set", user, added_method=added, **_who(by, via))
    db.session.commit()
    return end_other_sessions(user, reason="password_reset")


def reset_link_problem(user: User) -> str | None:
    """Why no reset link can be sent to this account, or None."""
    if user.disabled:
        return "The account is disabled: enable it first."
    if not user.email:
        return "The account has no e-mail address to send a link to."
    if not any(link.connector == "local" for link in user.links):
        return (
            "The account has no password here (it signs in with "
            + ", ".join(label(link.connector) for link in user.links)
            + "): set a password instead."
        )
    return None


def send_reset_link(
    user: User, *, by: str | None = None, via: str = "console", welcome: bool = False
) -> Future:
    """E-mail a single-use link to choose a password (the reset machinery of
    identity.auth.reset: the same table, lifetime and page). The current password, if any,
    keeps working until the link is used."""
    problem = reset_link_problem(user)
    if problem:
        raise Refused(problem)
    cfg = current_app.config
    token = secrets.token_urlsafe(32)
    db.session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=reset._digest(token),
            expires_at=utcnow() + timedelta(seconds=cfg["PASSWORD_RESET_MAX_AGE"]),
        )
    )
    if not welcome:
        audit.record("admin.user_reset_link_sent", user, **_who(by, via))
    db.session.commit()
    issuer = cfg["ISSUER"].rstrip("/")
    # Built without a request (the CLI has none); the host is IDP_ISSUER's, never a header's.
    path = current_app.url_map.bind("localhost").build(
        "auth.reset_password", {"token": token}, force_external=False
    )
    link = issuer + path
    minutes = cfg["PASSWORD_RESET_MAX_AGE"] // 60
    if welcome:
        subject = "Your new account"
        opening = (
            f"An administrator created an account for you at {cfg['BRAND_NAME']} ({issuer}) "
            f"with the username {user.username}. To choose your password, open this link "
            f"within {minutes} minutes:"
        )
    else:
        subject = "Choose a new password"
        opening = (
            "An administrator asked you to choose a new password for your "
            f"{cfg['BRAND_NAME']} account. Open this link within {minutes} minutes:"
        )
    return mail.send(
        user.email,
        subject,
        (
            f"Hello {user.username},\n\n{opening}\n\n{link}\n\n"
            f"The link works once. If it has expired, ask for a new one at {issuer}/reset.\n"
        ),
    )


def _expire_reset_links(user: User) -> None:
    db.session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=utcnow())
    )


def unlink_problem(user: User, link: LinkedIdentity) -> str | None:
    """Why this way to sign in cannot be removed, or None: an active account keeps one."""
    if len(user.links) < 2 and not user.disabled:
        return (
            f"{label(link.connector)} is the only way to sign in to {user.username}: removing "
            "it would leave an active account nobody can sign in to. Disable the account "
            "first, or give it another way to sign in (set a password)."
        )
    return None


def unlink(
    user: User, link: LinkedIdentity, *, by: str | None = None, via: str = "console"
) -> None:
    """Remove one way to sign in. A password removed is gone (hash and pending reset links)."""
    problem = unlink_problem(user, link)
    if problem:
        raise Refused(problem)
    connector = link.connector
    if connector == "local":
        user.password_hash = None
        _expire_reset_links(user)
    if connector == "passkey":
        # The passkeys go with their link: none of them signs in any more.
        from identity.auth import passkeys

        for passkey in passkeys.of(user):
            db.session.delete(passkey)
    user.links.remove(link)
    audit.record("admin.user_unlinked", user, method=connector, **_who(by, via))
    db.session.commit()


def reset_mfa(user: User, *, by: str | None = None, via: str = "console") -> Future | None:
    """Remove every second factor and recovery code of `user` (who lost them, or whose
    factors may be in someone else's hands), sign them out everywhere as disabling does
    (sessions, remember-me cookies, every token, offline ones too; the apps are told), and
    tell the person by e-mail (returned: the CLI waits for it). Their next sign-in asks only
    the first factor, or, under IDP_MFA_REQUIRED, has them enrol again."""
    from identity.auth import mfa
    from identity.oidc.logout import end_other_sessions

    had = mfa.factors(user)
    if not had:
        raise Refused(f"{user.username} has no second factor to reset.")
    mfa.remove_all(user)
    user.end_sessions()
    audit.record("admin.user_mfa_reset", user, factors=had, **_who(by, via))
    db.session.commit()
    end_other_sessions(user, reason="mfa_reset")
    if not user.email:
        return None
    issuer = current_app.config["ISSUER"].rstrip("/")
    return mail.send(
        user.email,
        "Your second factor was reset",
        (
            f"Hello {user.username},\n\nAn administrator removed the second factors "
            "(authenticator app, passkeys) and the recovery codes of your account at "
            f"{current_app.config['BRAND_NAME']} ({issuer}), and signed you out on every "
            "device. Your next sign-in asks only for your first sign-in method (or, where a "
            "second factor is required, has you set up a new app).\n\nIf you did not ask "
            "for this, tell your administrator at once.\n"
        ),
    )


def end_sessions(user: User, *, by: str | None = None, via: str = "console") -> int:
    """End every session and remember-me cookie, revoke every token, tell the apps."""
    from identity.oidc.logout import end_other_sessions

    user.end_sessions()
    audit.record("admin.user_sessions_ended", user, **_who(by, via))
    db.session.commit()
    return end_other_sessions(user, reason="admin")


def removal_problem(user: User, action: str, me: User | None = None) -> str | None:
    """Why `me` (None: the command line) must not `action` `user` ("disable" the account or
    "demote" it, removing its administrator role), or None when it may. The console and the
    command line ask this one rule: nobody removes themselves, and an active administrator
    always remains, or nobody could use the console again."""
    if me is not None and user.id == me.id:
        if action == "disable":
            return "You cannot disable your own account. Ask another administrator."
        return "You cannot remove your own administrator role. Ask another administrator."
    if user.disabled or not user.is_administrator:
        return None  # not an active administrator: no administrator is lost
    if action == "demote" and user.in_admin_group:
        return None  # still an administrator through the directory's admin group
    if _other_active_administrator(user):
        return None
    what = "disabled" if action == "disable" else "demoted"
    return (
        f"{user.username} is the last active administrator and cannot be {what}: "
        "make another account an administrator first."
    )


def _other_active_administrator(user: User) -> bool:
    """Whether an active account other than `user` is an administrator (its own flag, or
    the directory's admin group)."""
    others = select(User).where(User.id != user.id, User.disabled.is_(False))
    if db.session.scalar(select(others.where(User.is_admin.is_(True)).exists())):
        return True
    with_groups = others.where(User.group_dns.is_not(None)).execution_options(yield_per=500)
    return any(other.is_administrator for other in db.session.scalars(with_groups))


def set_admin(user: User, admin: bool, *, by: str | None = None, via: str = "console") -> None:
    user.is_admin = admin
    audit.record(
        "admin.user_admin_granted" if admin else "admin.user_admin_revoked", user, **_who(by, via)
    )
    db.session.commit()


def end_session(
    user: User,
    sid: str,
    *,
    keep_sid: str | None = None,
    by: str | None = None,
    via: str = "console",
) -> None:
    """End one session of the account (and the remembered device behind it); the tokens its
    apps got from it are revoked. `keep_sid`: the admin's own session, when it is theirs."""
    from identity.auth import devices

    devices.end_session(user, sid, by="admin", keep_sid=keep_sid)
    audit.record("admin.user_session_ended", user, **_who(by, via))
    db.session.commit()


def forget_device(
    user: User, device_id: str, *, by: str | None = None, via: str = "console"
) -> None:
    """Forget one remembered device of the account, with the sessions it restored."""
    from identity.auth import devices

    devices.forget_device(user, device_id, by="admin")
    audit.record("admin.user_device_forgotten", user, **_who(by, via))
    db.session.commit()
