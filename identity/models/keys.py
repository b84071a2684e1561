"""Signing keys: public JWK in clear, private key encrypted; next -> current -> retired."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from identity.extensions import db
from identity.models.users import utcnow


class SigningKey(db.Model):
    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    alg: Mapped[str] = mapped_column(String(16), index=True)
    # "next": published, not signing yet; "current": signing; "retired": published until
    # expires_at, so tokens it signed still verify.
    state: Mapped[str] = mapped_column(String(16), index=True)
    public_jwk: Mapped[dict] = mapped_column(JSON)
    private_key: Mapped[str] = mapped_column(Text)  # Fernet token of the PEM
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]

    def as_dict(self) -> dict:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat(timespec="seconds") + "Z" if t else None

        return {
            "kid": self.kid,
            "alg": self.alg,
            "state": self.state,
            "created_at": iso(self.created_at),
            "activated_at": iso(self.activated_at),
            "retired_at": iso(self.retired_at),
            "expires_at": iso(self.expires_at),
        }
