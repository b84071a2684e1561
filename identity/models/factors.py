"""Second factors of an account: its TOTP authenticator, recovery codes and passkeys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from identity.extensions import db
from identity.models.users import utcnow


class TotpFactor(db.Model):
    """An enrolled authenticator app (RFC 6238): one per account, stored once confirmed."""

    __tablename__ = "totp_factors"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    # The base32 secret, Fernet-encrypted (identity.secretbox).
    secret: Mapped[str] = mapped_column(Text)
    # The newest time step accepted: a code of this step or an earlier one is refused, so
    # that an accepted code is never accepted again (a conditional UPDATE spends it).
    last_step: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class RecoveryCode(db.Model):
    """A single-use recovery code: only its SHA-256 is stored; used_at spends it."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class Passkey(db.Model):
    """A WebAuthn credential (a passkey) of an account: several per account, each named."""

    __tablename__ = "passkeys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The credential id, base64url (what authenticators answer with): unique everywhere.
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    # The authenticator's signature counter: a value that does not grow (when non-zero)
    # means a cloned authenticator (a conditional UPDATE keeps the newest).
    sign_count: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(64))
    # Backup eligible / backed up (WebAuthn flags BE, BS): a synced passkey, or device-bound.
    backup_eligible: Mapped[bool] = mapped_column(default=False)
    backed_up: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]


class WebauthnChallenge(db.Model):
    """A challenge handed to a browser: deleted when answered (one use), refused when old."""

    __tablename__ = "webauthn_challenges"

    # A random id that the browser's signed session names; the challenge itself stays here.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    challenge: Mapped[bytes] = mapped_column(LargeBinary)
    # What it was asked for ("register", "signin", "second"), and for whom (None: anyone).
    purpose: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
