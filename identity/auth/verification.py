"""E-mail verification: a single-use, expiring link proves that the account's holder reads
the address it was sent to; only then is the address verified."""

from __future__ import annotations

import math
from concurrent.futures import Future
from datetime import timedelta

from flask import current_app, url_for
from sqlalchemy import delete, func, select, update

from identity import audit, mail
from identity.auth import links
from identity.extensions import db
from identity.models import EmailVerification, User
from identity.models.users import utcnow

# Links one account may ask for within RESEND_WINDOW (the one sent at registration counts):
# enough for a lost mail or two, too few to make this service a mail bomb.
RESEND_LIMIT = 5
RESEND_WINDOW = timedelta(hours=1)

INVALID = (
    "This verification link is not valid. Copy the whole link from the e-mail, or ask for "
    "a new one on your account page."
)
USED = (
    "This verification link has already been used. Your account page shows whether your "
    "address is verified."
)
EXPIRED = "This verification link has expired. Ask for a new one on your account page."
CHANGED = (
    "This link was sent to an address your account no longer uses, so it verifies nothing. "
    "Ask for a new link on your account page."
)
MESSAGES = {links.INVALID: INVALID, links.USED: USED, links.EXPIRED: EXPIRED}


def enabled() -> bool:
    return bool(current_app.config["REGISTRATION_EMAIL_VERIFICATION"])


def wait_before_sending(user: User) -> int:
    """Seconds before another link may be sent to `user` (0: now)."""
    since = utcnow() - RESEND_WINDOW
    sent = db.session.execute(
        select(func.count(), func.min(EmailVerification.created_at)).where(
            EmailVerification.user_id == user.id, EmailVerification.created_at > since
        )
    ).one()
    if sent[0] < RESEND_LIMIT:
        return 0
    return max(1, math.ceil((sent[1] - since).total_seconds()))


def send(user: User) -> Future:
    """Mail `user` a link that verifies their current address (committed). The caller has
    checked that the account has an unverified address and wait_before_sending()."""
    cfg = current_app.config
    now = utcnow()
    token, digest = links.new_token()
    # Links that expired are of no use any more; those sent within the window are kept, as
    # they count towards the limit even when IDP_EMAIL_VERIFICATION_MAX_AGE is shorter.
    db.session.execute(
        delete(EmailVerification).where(
            EmailVerification.user_id == user.id,
            EmailVerification.expires_at <= now,
            EmailVerification.created_at <= now - RESEND_WINDOW,
        )
    )
    db.session.add(
        EmailVerification(
            user_id=user.id,
            email_key=user.email_key,
            token_hash=digest,
            created_at=now,
            expires_at=now + timedelta(seconds=cfg["EMAIL_VERIFICATION_MAX_AGE"]),
        )
    )
    audit.record("email.verification_sent", user)
    db.session.commit()
    # The link is built from IDP_ISSUER, never from the request's Host header.
    link = cfg["ISSUER"] + url_for("auth.verify_email", token=token)
    within = _duration(cfg["EMAIL_VERIFICATION_MAX_AGE"])
    return mail.send(
        user.email,
        "Verify your e-mail address",
        (
            f"Hello {user.username},\n\n"
            f"To confirm that {user.email} is your address at {cfg['BRAND_NAME']}, open this "
            f"link within {within}:"
            f"\n\n{link}\n\n"
            "The link works once. If you did not create an account, ignore this message: "
            "the address stays unverified.\n"
        ),
    )


def _duration(seconds: int) -> str:
    hours, minutes = seconds / 3600, seconds // 60
    if hours >= 1:
        return f"{hours:g} hour{'' if hours == 1 else 's'}"
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


def lookup(token: str) -> tuple[EmailVerification | None, str | None]:
    """The link for `token`, or the message that says why it cannot be used."""
    found, problem = links.find(EmailVerification, token)
    if problem:
        return None, MESSAGES[problem]
    if found.user.disabled:
        return None, INVALID
    if found.email_key != found.user.email_key:
        return None, CHANGED
    return found, None


def complete(link: EmailVerification) -> str | None:
    """Use the link once and verify the address it was sent to; None on success, else the
    message."""
    now = utcnow()
    if not links.claim(EmailVerification, link, now):
        db.session.rollback()
        return USED
    # Conditional on the address: one changed since the lookup is not verified.
    verified = db.session.execute(
        update(User)
        .where(User.id == link.user_id, User.email_key == link.email_key)
        .values(email_verified=True)
    ).rowcount
    if verified != 1:
        db.session.rollback()
        return CHANGED
    links.spend_all(EmailVerification, link.user_id, now)
    audit.record("email.verified", link.user)
    db.session.commit()
    return None
