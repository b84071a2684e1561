"""Apps registered with the provider (Authlib's SQLAlchemy client mixin)."""

from __future__ import annotations

import hashlib
import hmac

from authlib.integrations.sqla_oauth2 import OAuth2ClientMixin
from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from identity.extensions import db


def secret_digest(secret: str) -> str:
    """SHA-256: client secrets are long random values, so a slow password hash would only cap
    the token endpoint at the hash rate without adding protection."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Client(db.Model, OAuth2ClientMixin):
    __tablename__ = "oauth_clients"
    __table_args__ = (UniqueConstraint("client_id"), UniqueConstraint("name"))

    id: Mapped[int] = mapped_column(primary_key=True)
    # A unique display name, also how admins refer to the app.
    name: Mapped[str] = mapped_column(String(100))
    # Trusted apps of the organisation: no consent screen.
    skip_consent: Mapped[bool] = mapped_column(default=False)

    def check_client_secret(self, client_secret: str) -> bool:
        # client_secret holds the SHA-256 of the secret, never the secret itself.
        if not self.client_secret or not client_secret:
            return False
        return hmac.compare_digest(self.client_secret, secret_digest(client_secret))

    @property
    def public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def as_dict(self) -> dict:
        meta = self.client_metadata
        return {
            "client_id": self.client_id,
            "name": self.name,
            "public": self.public,
            "redirect_uris": meta.get("redirect_uris", []),
            "post_logout_redirect_uris": meta.get("post_logout_redirect_uris", []),
            "backchannel_logout_uri": meta.get("backchannel_logout_uri"),
            "grant_types": meta.get("grant_types", []),
            "response_types": meta.get("response_types", []),
            "scope": meta.get("scope", ""),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "skip_consent": self.skip_consent,
        }
