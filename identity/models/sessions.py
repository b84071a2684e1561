"""Signed-in browser sessions and remember-me tokens, kept server-side so that either can be
listed, and ended on every node at once."""

from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from identity.extensions import db


class BrowserSession(db.Model):
    """One signed-in browser session, by the `sid` its signed cookie carries. A session
    without its row is over: deleting the row signs that browser out everywhere."""

    __tablename__ = "browser_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Times in epoch seconds, as in the session cookie and tokens.
    started_at: Mapped[int]
    last_seen_at: Mapped[int]
    expires_at: Mapped[int] = mapped_column(index=True)
    # The sign-in it comes from (for a restored session: the remembered one).
    auth_time: Mapped[int]
    connector: Mapped[str] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(256))
    # The remember-me series that started or restored it: ending the series ends it too.
    series: Mapped[str | None] = mapped_column(String(32), index=True)


class RememberToken(db.Model):
    """A remember-me cookie: `series` finds it, only the SHA-256 of its secret is kept, and
    the secret changes at every use (the previous digest is kept to recognise a replay)."""

    __tablename__ = "remember_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    series: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    previous_hash: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The account's session_epoch when issued: any later change ends the token.
    epoch: Mapped[str] = mapped_column(String(32))
    # The sign-in it remembers: a restored session keeps its time and methods.
    auth_time: Mapped[int]
    amr: Mapped[list] = mapped_column(JSON, default=list)
    connector: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[int]
    rotated_at: Mapped[int]
    expires_at: Mapped[int] = mapped_column(index=True)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(256))
