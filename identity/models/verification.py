"""E-mail verification links: proof that an account's holder reads its address."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from identity.extensions import db
from identity.models.users import User, utcnow


class EmailVerification(db.Model):
    """A verification link: only the SHA-256 of its token is stored; it verifies only the
    address it was sent to (email_key), and used_at makes it single-use."""

    __tablename__ = "email_verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The address the link was mailed to, lower-cased: if the account's address changes
    # meanwhile, the link verifies nothing.
    email_key: Mapped[str] = mapped_column(String(254))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()
