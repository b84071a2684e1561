"""Second factors: TOTP authenticators (RFC 6238) and recovery codes, each code spent once;
which factors an account has (passkeys: identity.auth.passkeys)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import urlsplit

import pyotp
from cryptography.fernet import InvalidToken
from flask import current_app
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError

from identity.extensions import db
from identity.models import LinkedIdentity, Passkey, RecoveryCode, TotpFactor, User
from identity.models.users import utcnow
from identity.secretbox import fernet

# HKDF's info for the key of TOTP secrets: not the signing keys' key.
PURPOSE = b"identity totp secrets v1"
STEP = 30
DIGITS = 6
RECOVERY_CODES = 10
# Recovery codes: 16 characters from 31 unambiguous ones (~79 bits), shown in groups of 4.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_LENGTH = 16
POLICIES = ("none", "admins", "all")

TOTP_SHAPE = re.compile(rf"\d{{{DIGITS}}}")
RECOVERY_SHAPE = re.compile(rf"[{RECOVERY_ALPHABET}]{{{RECOVERY_LENGTH}}}")
CODE_HELP = (
    f"Enter the {DIGITS}-digit code from your authenticator app, or one of your recovery "
    f"codes ({RECOVERY_LENGTH} letters and digits)."
)
TOTP_HELP = f"Enter the {DIGITS}-digit code that your authenticator app shows now."


def factors(user: User) -> list[str]:
    """The second factors `user` has enrolled: "totp", "passkey" (either, both or none)."""
    # One statement: every sign-in asks.
    totp, passkey = db.session.execute(
        select(
            exists().where(TotpFactor.user_id == user.id),
            exists().where(Passkey.user_id == user.id),
        )
    ).one()
    return [name for name, has in (("totp", totp), ("passkey", passkey)) if has]


def required(user: User) -> bool:
    """Whether IDP_MFA_REQUIRED covers `user` (administrators, everyone, or nobody)."""
    policy = current_app.config["MFA_REQUIRED"]
    return policy == "all" or (policy == "admins" and user.is_administrator)


# -- TOTP ---------------------------------------------------------------------------------


def new_secret() -> str:
    """A new random base32 secret (160 bits, RFC 4226's recommended length)."""
    return pyotp.random_base32(32)


def seal(secret: str) -> str:
    """`secret` encrypted, for the database or the session cookie."""
    return fernet(PURPOSE).encrypt(secret.encode()).decode()


def unseal(sealed: str) -> str | None:
    """The secret `sealed` holds; None when it was sealed with another key (or tampered)."""
    try:
        return fernet(PURPOSE).decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def provisioning_uri(user: User, secret: str) -> str:
    """The otpauth:// URI authenticator apps read: the account name and this issuer's host."""
    issuer = urlsplit(current_app.config["ISSUER"]).hostname or "identity"
    return pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=issuer)


def qr_svg_data_uri(uri: str) -> str:
    """`uri` as a QR code: an SVG data: URI (the CSP allows data: images, no script needed).
    Dark on white with its quiet zone, in dark mode too: cameras read nothing else well."""
    import segno  # here: only enrolment draws one (1.2 MB a worker would hold otherwise)

    return segno.make(uri, error="m").svg_data_uri(scale=5, border=4, dark="#000", light="#fff")


def clean_code(code: str | None) -> str:
    """What was typed, without the spaces and dashes people copy along, lower case."""
    return re.sub(r"[\s-]+", "", code or "").lower()[:64]


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step (of now, one before or one after) whose code is `code`, or None."""
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // STEP)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def enrol(user: User, secret: str, code: str) -> bool:
    """Store `secret` as `user`'s authenticator when `code` is its code now (the caller
    commits). False when the code is wrong or an authenticator was enrolled meanwhile."""
    step = matching_step(secret, code)
    if step is None:
        return False
    db.session.add(TotpFactor(user_id=user.id, secret=seal(secret), last_step=step))
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


def verify_totp(user: User, code: str) -> bool:
    """Whether `code` is a good code of `user`'s authenticator, spending its time step: a
    step once accepted (or an earlier one) is refused, also to a concurrent request with the
    same code, on any node (a conditional UPDATE: one wins). The caller commits."""
    factor = db.session.scalar(select(TotpFactor).where(TotpFactor.user_id == user.id))
    if factor is None:
        return False
    secret = unseal(factor.secret)
    step = matching_step(secret, code) if secret else None
    if step is None:
        return False
    won = db.session.execute(
        update(TotpFactor)
        .where(TotpFactor.id == factor.id, TotpFactor.last_step < step)
        .values(last_step=step, last_used_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    return won == 1


def remove_all(user: User) -> None:
    """Remove every second factor of `user` (passkeys and their sign-in link too) and its
    recovery codes (the caller commits)."""
    db.session.execute(delete(TotpFactor).where(TotpFactor.user_id == user.id))
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.session.execute(delete(Passkey).where(Passkey.user_id == user.id))
    db.session.execute(
        delete(LinkedIdentity).where(
            LinkedIdentity.user_id == user.id, LinkedIdentity.connector == "passkey"
        )
    )
    db.session.expire(user, ["links"])


def remove_totp(user: User) -> None:
    """Remove `user`'s authenticator app; the recovery codes go too unless a passkey stays
    (they recover the factors that remain). The caller commits."""
    db.session.execute(delete(TotpFactor).where(TotpFactor.user_id == user.id))
    if "passkey" not in factors(user):
        db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


# -- recovery codes -----------------------------------------------------------------------


def _digest(code: str) -> str:
    # Random and long (~79 bits): a fast hash is right, as for client secrets.
    return hashlib.sha256(code.encode()).hexdigest()


def issue_recovery_codes(user: User) -> list[str]:
    """Ten new recovery codes for `user`, as shown once ("abcd-efgh-..."); the old ones end
    (the caller commits). Only their SHA-256 is stored."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [
        "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        for _ in range(RECOVERY_CODES)
    ]
    db.session.add_all(RecoveryCode(user_id=user.id, code_hash=_digest(c)) for c in codes)
    return ["-".join(c[i : i + 4] for i in range(0, RECOVERY_LENGTH, 4)) for c in codes]


def recovery_codes_left(user: User) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    )


def use_recovery_code(user: User, code: str) -> bool:
    """Spend one of `user`'s recovery codes: of any number of concurrent uses of one code,
    one wins (a conditional UPDATE). The caller commits."""
    won = db.session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user.id,
            RecoveryCode.code_hash == _digest(code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    return won == 1
