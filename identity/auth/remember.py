"""Remember-me cookies as server-side tokens ("series.secret"): the secret is random, kept as
its SHA-256 with its expiry and the sign-in it remembers, replaced at every use, and refused
on every node once ended. A secret replaced earlier and presented again means the cookie was
copied: that series ends, with the sessions it restored (Jaspan's improved persistent login
cookie)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from flask import after_this_request, current_app, request
from sqlalchemy import delete, select, update

from identity import audit
from identity.auth import sessions
from identity.extensions import db, remember_cookie_attributes
from identity.models import RememberToken, User
from identity.sweeps import sweep

# A request sent alongside the one that replaced the secret (several tabs restored at once)
# still carries the old one: within this many seconds it is refused quietly, not as a theft.
REPLAY_GRACE = 30


@dataclass
class Remembered:
    """A remember-me cookie that was just used: whose, and the sign-in it remembers."""

    user: User
    series: str
    auth_time: int
    amr: list
    connector: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def _cookie_name() -> str:
    return current_app.config["REMEMBER_COOKIE_NAME"]


def presented_series() -> str | None:
    """The series of the remember-me cookie this request carries, if any."""
    series, _, secret = request.cookies.get(_cookie_name(), "").partition(".")
    return series if series and secret and len(series) <= 32 else None


def issue(user: User, *, auth_time: int, amr: list, connector: str) -> str:
    """A new remember-me series for this sign-in, its cookie set on the response (the caller
    commits); returns the series."""
    now = int(time.time())
    sweep(RememberToken, lambda: (RememberToken.expires_at < now,))
    series, secret = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    expires = now + int(current_app.config["REMEMBER_COOKIE_DURATION"].total_seconds())
    db.session.add(
        RememberToken(
            series=series,
            token_hash=_digest(secret),
            user_id=user.id,
            epoch=user.session_epoch,
            auth_time=auth_time,
            amr=list(amr),
            connector=connector,
            created_at=now,
            rotated_at=now,
            expires_at=expires,
            **sessions.client_facts(),
        )
    )
    _set_cookie(f"{series}.{secret}", expires)
    return series


def use(cookie: str) -> Remembered | None:
    """The sign-in a remember-me cookie stands for, its secret replaced (committed); None
    when it is unknown, expired, ended, or the account changed since (the cookie is then
    deleted)."""
    series, _, secret = cookie.partition(".")
    if not series or not secret or len(series) > 32 or len(secret) > 64:
        return forget()
    now = int(time.time())
    row = db.session.scalar(select(RememberToken).where(RememberToken.series == series))
    if row is None:
        return forget()
    digest = _digest(secret)
    if not hmac.compare_digest(digest, row.token_hash):
        if (
            row.previous_hash
            and hmac.compare_digest(digest, row.previous_hash)
            and now - row.rotated_at <= REPLAY_GRACE
        ):
            return None  # the response with the new secret is on its way to this browser
        _stolen(row)
        return forget()
    user = db.session.get(User, row.user_id)
    if row.expires_at <= now or user is None or user.disabled or user.session_epoch != row.epoch:
        db.session.delete(row)
        db.session.commit()
        return forget()
    new_secret = secrets.token_urlsafe(32)
    # Conditional: of two requests using the same secret at once, on any node, one wins.
    won = db.session.execute(
        update(RememberToken)
        .where(RememberToken.id == row.id, RememberToken.token_hash == digest)
        .values(
            token_hash=_digest(new_secret),
            previous_hash=digest,
            rotated_at=now,
            **sessions.client_facts(),
        )
    ).rowcount
    if won != 1:
        db.session.rollback()
        return None
    _set_cookie(f"{series}.{new_secret}", row.expires_at)
    return Remembered(user, series, row.auth_time, list(row.amr or []), row.connector)


def end(series: str | None, user: User | None = None) -> None:
    """End a series (of `user`, when given): its cookie is refused from now on (the caller
    commits)."""
    if not series:
        return
    condition = RememberToken.series == series
    if user is not None:
        condition = condition & (RememberToken.user_id == user.id)
    db.session.execute(delete(RememberToken).where(condition))


def of_user(user: User) -> list[RememberToken]:
    """The account's remembered devices, the most recently used first."""
    return list(
        db.session.scalars(
            select(RememberToken)
            .where(
                RememberToken.user_id == user.id,
                RememberToken.epoch == user.session_epoch,
                RememberToken.expires_at > time.time(),
            )
            .order_by(RememberToken.rotated_at.desc())
        )
    )


def _stolen(row: RememberToken) -> None:
    """A replaced secret came back: someone holds a copy. The series ends, and every
    session it restored (the thief's or the owner's), with their apps' tokens."""
    user = db.session.get(User, row.user_id)
    db.session.delete(row)
    audit.record("signin.remember_reuse", user, series_started=row.created_at)
    db.session.commit()
    if user is not None:
        sessions.end(user, sessions.of_series(user, row.series), reason="remember_reuse")


def _set_cookie(value: str, expires: int) -> None:
    cfg = current_app.config

    @after_this_request
    def write(response):
        response.set_cookie(
            cfg["REMEMBER_COOKIE_NAME"], value, expires=expires, **remember_cookie_attributes()
        )
        return response


def forget() -> None:
    """Delete this browser's remember-me cookie in the response (it restores nothing)."""
    cfg = current_app.config

    @after_this_request
    def delete_cookie(response):
        response.delete_cookie(cfg["REMEMBER_COOKIE_NAME"], **remember_cookie_attributes())
        return response

    return None
