"""Second factors of an account: its TOTP authenticator and its recovery codes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text
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
