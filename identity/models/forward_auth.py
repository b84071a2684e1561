"""Forward-authentication rules: who may reach which site (host and path prefix) behind a
reverse proxy that asks this service first."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from identity.extensions import db
from identity.models.users import utcnow


class ForwardAuthRule(db.Model):
    """One rule: requests for `host` whose path is `path_prefix` or under it may pass when
    the person is signed in, is in one of `groups` (empty: anyone signed in), and signed in
    at least as strongly as `acr` (None: any sign-in; "mfa"; "phr": with a passkey). The
    longest matching prefix of a host decides; a host without rules is refused."""

    __tablename__ = "forward_auth_rules"
    __table_args__ = (UniqueConstraint("host", "path_prefix"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Lower-case ASCII host name, without port.
    host: Mapped[str] = mapped_column(String(253), index=True)
    # Starts with "/"; compared case-insensitively, at "/" boundaries.
    path_prefix: Mapped[str] = mapped_column(String(512), default="/")
    groups: Mapped[list] = mapped_column(JSON, default=list)
    acr: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
