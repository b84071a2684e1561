"""The provider's tables: apps, codes, tokens, consents, and back-channel logouts waiting to
be delivered (the first three on Authlib's SQLAlchemy mixins)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime

from authlib.integrations.sqla_oauth2 import (
    OAuth2AuthorizationCodeMixin,
    OAuth2ClientMixin,
    OAuth2TokenMixin,
)
from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from identity import acr
from identity.extensions import db
from identity.models.users import User, utcnow
from identity.scopes import OFFLINE_ACCESS


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
    # Trusted apps of the organisation: no consent screen unless the app sends
    # prompt=consent (its only way to offline_access, which a person must allow).
    skip_consent: Mapped[bool] = mapped_column(default=False)

    def check_client_secret(self, client_secret: str) -> bool:
        # client_secret holds the SHA-256 of the secret, never the secret itself.
        if not self.client_secret or not client_secret:
            return False
        return hmac.compare_digest(self.client_secret, secret_digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # A public app authenticates with nothing; a confidential one with its secret, in
        # the Authorization header or the form (both are standard; neither is weaker).
        if self.public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def get_default_redirect_uri(self) -> str | None:
        # Without redirect_uri in the request: only an app with exactly one registered URI
        # has an unambiguous default (OpenID Connect requires the parameter anyway).
        uris = self.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope):
        """The requested scopes the app is registered for; `offline_access` goes with the
        refresh grant (OpenID Connect Core 11: it asks for a refresh token, so an app allowed
        to refresh may ask for it; identity.oidc.authorization grants it only with consent)."""
        if not scope:
            return ""
        allowed = set(self.scope.split())
        if self.check_grant_type("refresh_token"):
            allowed.add(OFFLINE_ACCESS)
        return " ".join(s for s in scope.split() if s in allowed)

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
            "id_token_signed_response_alg": meta.get("id_token_signed_response_alg", "RS256"),
            "skip_consent": self.skip_consent,
            "require_acr": meta.get("require_acr"),
            "subject_type": meta.get("subject_type") or "public",
            "logo_uri": meta.get("logo_uri"),
        }


def token_digest(value: str) -> str:
    """Codes and refresh tokens are stored as SHA-256 digests: a copy of the database
    redeems nothing."""
    return hashlib.sha256(value.encode()).hexdigest()


class AuthorizationCode(db.Model, OAuth2AuthorizationCodeMixin):
    """A code (its digest in `code`), single use: `used_at` is set by one conditional UPDATE,
    `replayed_at` when it is presented again.

    `auth_time` is the session's sign-in time (Authlib puts it in the ID token), not the
    code's; `issued_at` dates the code."""

    __tablename__ = "oauth_codes"
    # The nonce replay check filters by app and nonce.
    __table_args__ = (Index("ix_oauth_codes_client_id_nonce", "client_id", "nonce"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sid: Mapped[str | None] = mapped_column(String(64), index=True)
    issued_at: Mapped[int] = mapped_column(default=lambda: int(time.time()))
    expires_at: Mapped[int] = mapped_column(index=True)
    used_at: Mapped[int | None]
    # Set when a spent code is presented again. The request that spent it first may still be
    # saving its tokens: it checks this mark in the same transaction (identity.oidc.tokens).
    replayed_at: Mapped[int | None]

    def is_expired(self) -> bool:
        return self.expires_at <= time.time()

    def get_amr(self):
        return json.loads(self.amr) if self.amr else None

    def get_acr(self):
        return acr.of(self.get_amr())


class Token(db.Model, OAuth2TokenMixin):
    """One token response: the access token's `jti` (in `access_token`), the refresh token's
    digest, and `grant_id`, shared by every token descending from one authorization (a code,
    then each refresh): reuse of a spent code or refresh token revokes the whole grant."""

    __tablename__ = "oauth_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    grant_id: Mapped[str] = mapped_column(String(64), index=True)
    sid: Mapped[str | None] = mapped_column(String(64), index=True)
    auth_time: Mapped[int | None]
    refresh_token_expires_at: Mapped[int | None]
    # Set when the refresh token is spent (rotated): presenting it again is reuse.
    refresh_token_used_at: Mapped[int | None]
    user: Mapped[User | None] = relationship(lazy="joined")

    def is_expired(self) -> bool:
        return self.issued_at + self.expires_in <= time.time()

    def is_revoked(self) -> bool:
        return bool(self.access_token_revoked_at)

    def refresh_usable(self) -> bool:
        return (
            not self.refresh_token_revoked_at
            and not self.refresh_token_used_at
            and (self.refresh_token_expires_at or 0) > time.time()
        )


class Consent(db.Model):
    """Scopes an account allowed an app; asked again only for scopes beyond these."""

    __tablename__ = "oauth_consents"
    __table_args__ = (UniqueConstraint("user_id", "client_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(48), index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)

    def covers(self, scope: str) -> bool:
        return set(scope.split()) <= set(self.scope.split())


class LogoutDelivery(db.Model):
    """A back-channel logout not delivered yet: kept until the app answers 200 or it can no
    longer matter (`expires_at`), so that it survives a restart. A process claims a row
    (`claimed_until`) before sending, so that two processes never send it at once."""

    __tablename__ = "oidc_logout_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(48), index=True)
    subject: Mapped[str] = mapped_column(String(64))
    sid: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[int] = mapped_column(index=True)
    claimed_until: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[int]
    last_error: Mapped[str | None] = mapped_column(String(200))
