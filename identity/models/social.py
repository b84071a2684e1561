"""Provider tokens from social sign-in, kept with Flask-Dance's SQLAlchemy storage model."""

from __future__ import annotations

from flask_dance.consumer.storage.sqla import OAuthConsumerMixin
from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from identity.extensions import db


class ProviderToken(OAuthConsumerMixin, db.Model):
    """The latest token a provider issued for one linked identity of an account."""

    __tablename__ = "provider_tokens"
    __table_args__ = (UniqueConstraint("provider", "provider_user_id"),)

    provider_user_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
