"""Upstream OpenID providers added in the admin console: the settings of one
IDP_OIDC_UPSTREAMS entry, with the client secret encrypted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from identity.extensions import db
from identity.models.users import utcnow


class UpstreamProvider(db.Model):
    __tablename__ = "oidc_upstreams"

    # The entry's "id": names the redirect URI and the sign-in method (oidc-<id>).
    id: Mapped[str] = mapped_column(String(27), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret: Mapped[str] = mapped_column(Text)  # Fernet token (identity.secretbox)
    label: Mapped[str] = mapped_column(String(60))
    scopes: Mapped[str] = mapped_column(String(500))  # space-separated
    username_claim: Mapped[str] = mapped_column(String(100))
    groups_claim: Mapped[str | None] = mapped_column(String(100))
    trust_email_verified: Mapped[bool] = mapped_column(default=False)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
