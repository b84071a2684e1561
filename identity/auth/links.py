"""Single-use links sent by e-mail: a random token, only its SHA-256 stored, claimed once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select, update

from identity.extensions import db
from identity.models.users import utcnow

# Why a link cannot be used; each kind of link words its own message.
INVALID, USED, EXPIRED = "invalid", "used", "expired"


def digest(token: str) -> str:
    """What is stored for `token`: a database leak gives no working link."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh token (for the e-mail) and its digest (for the database)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def find(model, token: str):
    """The unused, unexpired row of `model` for `token` and None, or None and why not
    (INVALID, USED or EXPIRED)."""
    if not token or len(token) > 128:
        return None, INVALID
    found = db.session.scalar(select(model).where(model.token_hash == digest(token)))
    if found is None:
        return None, INVALID
    if found.used_at is not None:
        return None, USED
    if found.expires_at <= utcnow():
        return None, EXPIRED
    return found, None


def claim(model, row, now: datetime) -> bool:
    """Mark `row` used, unless another request did first or it expired meanwhile (the caller
    commits). The conditional UPDATE is what makes a link single-use under concurrency."""
    return (
        db.session.execute(
            update(model)
            .where(model.id == row.id, model.used_at.is_(None), model.expires_at > now)
            .values(used_at=now)
        ).rowcount
        == 1
    )


def spend_all(model, user_id: int, now: datetime) -> None:
    """Every outstanding link of `model` for the account dies (the caller commits)."""
    db.session.execute(
        update(model).where(model.user_id == user_id, model.used_at.is_(None)).values(used_at=now)
    )
