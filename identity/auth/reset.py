"""Password reset links: random, stored as a hash, single-use, expiring."""

from __future__ import annotations

import secrets
from datetime import timedelta

from flask import current_app, url_for
from sqlalchemy import select

from identity import audit, mail
from identity.auth import accounts, links
from identity.extensions import db
from identity.models import PasswordReset, User
from identity.models.users import utcnow
from identity.names import fold
from identity.throttle import throttle

INVALID = "This reset link is not valid. Copy the whole link from the e-mail, or ask for a new one."
USED = "This reset link has already been used. Ask for a new one if you still need it."
EXPIRED = "This reset link has expired. Ask for a new one."
MESSAGES = {links.INVALID: INVALID, links.USED: USED, links.EXPIRED: EXPIRED}

_digest = links.digest


def request_reset(email: str) -> None:
    """Mail a reset link when an account with a local password uses `email`; else nothing.

    The caller answers the same either way; the mail leaves on another thread.
    """
    user = db.session.scalar(select(User).where(User.email_key == fold(email)))
    # Counted for every address asked for, with or without an account: beyond the limit no
    # mail leaves (mail bombing), and the caller's answer is the same as always.
    if throttle().use("reset-emails", throttle().email_key(email)):
        audit.record("password.reset_limited", user, known=user is not None)
        db.session.commit()
        return
    if user is None or user.disabled or not any(l.connector == "local" for l in user.links):
        audit.record("password.reset_requested", None, known=False)
        db.session.commit()
        return
    token = secrets.token_urlsafe(32)
    minutes = current_app.config["PASSWORD_RESET_MAX_AGE"] // 60
    db.session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=_digest(token),
            expires_at=utcnow() + timedelta(seconds=current_app.config["PASSWORD_RESET_MAX_AGE"]),
        )
    )
    audit.record("password.reset_requested", user, known=True)
    db.session.commit()
    # The link is built from IDP_ISSUER, never from the request's Host header.
    link = current_app.config["ISSUER"] + url_for("auth.reset_password", token=token)
    mail.send(
        user.email,
        "Reset your password",
        (
            f"Hello {user.username},\n\n"
            f"Someone asked to reset the password of your {current_app.config['BRAND_NAME']} "
            "account. To choose a new password, "
            f"open this link within {minutes} minutes:\n\n{link}\n\n"
            "The link works once. If you did not ask for it, ignore this message: your password "
            "stays as it is.\n"
        ),
    )


def lookup(token: str) -> tuple[PasswordReset | None, str | None]:
    """The reset for `token`, or the message that says why it cannot be used."""
    found, problem = links.find(PasswordReset, token)
    if problem:
        return None, MESSAGES[problem]
    if found.user.disabled:
        return None, INVALID
    return found, None


def complete(reset: PasswordReset, password: str) -> str | None:
    """Use the link once and set the password; None on success, else the message."""
    now = utcnow()
    if not links.claim(PasswordReset, reset, now):
        db.session.rollback()
        return USED
    user = reset.user
    # Any other outstanding link of this account dies with this one.
    links.spend_all(PasswordReset, user.id, now)
    accounts.set_password(user, password)
    audit.record("password.reset", user)
    db.session.commit()
    # Whoever knew the old password may hold tokens: every session ends, apps are told.
    from identity.oidc.logout import end_other_sessions

    end_other_sessions(user, reason="password_reset")
    return None
