"""Accounts, the sign-in methods linked to them, and password reset tokens."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint, delete, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column, relationship

from identity.extensions import db
from identity.names import fold


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-case: usernames are case-insensitive.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    # Folded e-mail (names.fold), unique: one account per address, whatever its case or form.
    email_key: Mapped[str | None] = mapped_column(String(254), unique=True)
    email_verified: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str | None] = mapped_column(String(200))
    # argon2id hash; None when the account has no local password (directory, social).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    # Group names from the directory (the `groups` claim), and the same groups' DNs in
    # identity.settings.ldap.normal_dn form (what IDP_LDAP_ADMIN_GROUP is compared with);
    # refreshed at each directory sign-in and re-check (identity.oidc.recheck).
    groups: Mapped[list] = mapped_column(JSON, default=list)
    group_dns: Mapped[list] = mapped_column(JSON, default=list)
    disabled: Mapped[bool] = mapped_column(default=False)
    # Part of the session id: changing it ends every session and remember-me cookie.
    session_epoch: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(8))
    # The `sub` apps see: random and never reused (an id could be, after a deletion).
    subject: Mapped[str] = mapped_column(String(36), unique=True, default=lambda: str(uuid.uuid4()))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]

    links: Mapped[list[LinkedIdentity]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="LinkedIdentity.id"
    )

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return not self.disabled

    @property
    def is_administrator(self) -> bool:
        """The local admin flag, or membership of IDP_LDAP_ADMIN_GROUP."""
        return self.is_admin or self.in_admin_group

    @property
    def in_admin_group(self) -> bool:
        """Membership of IDP_LDAP_ADMIN_GROUP: the group with that DN (both normalised),
        never another group of the same name."""
        from flask import current_app

        group = current_app.config.get("LDAP_ADMIN_GROUP")
        return bool(group and group in (self.group_dns or []))

    def get_id(self) -> str:
        return f"{self.id}.{self.session_epoch}"

    def end_sessions(self, keep_sid: str | None = None) -> None:
        """End every session (but `keep_sid`) and every remember-me cookie of this account,
        on every node (the caller commits)."""
        from identity.models.sessions import BrowserSession, RememberToken

        self.session_epoch = secrets.token_hex(8)
        ended = BrowserSession.user_id == self.id
        if keep_sid:
            ended = ended & (BrowserSession.sid != keep_sid)
        db.session.execute(delete(BrowserSession).where(ended))
        db.session.execute(delete(RememberToken).where(RememberToken.user_id == self.id))

    @classmethod
    def find(cls, name: str | None, *, by_email: bool = True) -> User | None:
        """The account with this username (or e-mail address), compared folded (names.fold)."""
        if not name:
            return None
        key = fold(name)
        cond = or_(cls.username == key, cls.email_key == key) if by_email else cls.username == key
        return db.session.scalar(select(cls).where(cond))

    @classmethod
    def email_taken(cls, email: str) -> bool:
        """Whether an account already has this e-mail address, whatever its case."""
        return db.session.scalar(select(cls.id).where(cls.email_key == fold(email))) is not None

    def set_email(self, email: str | None) -> None:
        """Set the address; another address than before is not verified (yet)."""
        key = fold(email) if email else None
        if key != self.email_key:
            self.email_verified = False
        self.email = email
        self.email_key = key

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "name": self.name,
            "admin": self.is_admin,
            "groups": list(self.groups or []),
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(timespec="seconds") + "Z",
            "sign_in_methods": [link.connector for link in self.links],
        }

    def get_user_id(self) -> str:
        """The subject in tokens (Authlib): never the row id."""
        return self.subject


class LinkedIdentity(db.Model):
    """A way to sign in to an account: (connector, subject) belongs to one account only."""

    __tablename__ = "linked_identities"
    __table_args__ = (UniqueConstraint("connector", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    connector: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    # Directory links: when the entry was last read (sign-in or re-check); None: never since
    # this column exists, so the next sign-in or refresh reads it.
    checked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="links")

    def write(self, **values) -> None:
        """Set `values` on this link with an UPDATE of its own, after what the session has
        pending (its account's changes among them) is flushed (the caller commits).

        Every transaction that writes an account and its link must lock the two rows in one
        order, the account first, or two of them deadlock on PostgreSQL; and the ORM orders
        the UPDATEs of two objects whose relationship did not change as it pleases (seen:
        twelve simultaneous sign-ins of one person, two of them answered 503)."""
        db.session.execute(
            update(LinkedIdentity).where(LinkedIdentity.id == self.id).values(**values)
        )


class PasswordReset(db.Model):
    """A reset link: only the SHA-256 of its token is stored; used_at makes it single-use."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()
