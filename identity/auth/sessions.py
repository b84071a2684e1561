"""Server-side records of signed-in browser sessions, by sid: written at sign-in and at
restoration, asked at every request (a session without its record is over, on every node),
listed on the account and admin pages, and ended one by one."""

from __future__ import annotations

import time

from flask import current_app, g, request
from sqlalchemy import bindparam, delete, select, update

from identity.database import adopt, read_one
from identity.extensions import db
from identity.models import BrowserSession, User
from identity.sweeps import sweep

# "Last seen" is written at most this often (seconds): never a write per request.
SEEN_EVERY = 60

# Asked before every signed-in request, built once: the session's record, and with it the
# account the cookie names, which Flask-Login's user loader then finds in the session's
# identity map: one round trip where there were two. Read outside the session's transaction
# (identity.database.read_one): a page that writes nothing begins none (on PostgreSQL, no
# BEGIN and ROLLBACK around it: one round trip where there were three).
LIVE = (
    select(BrowserSession.last_seen_at, *User.__table__.c)
    .join_from(BrowserSession, User, User.id == bindparam("uid"), isouter=True)
    .where(BrowserSession.sid == bindparam("sid"), BrowserSession.expires_at > bindparam("now"))
)
TOUCH = (
    update(BrowserSession)
    .where(BrowserSession.sid == bindparam("session_id"))
    .values(last_seen_at=bindparam("now"), ip=bindparam("ip"))
)


def client_facts() -> dict:
    """Where the request comes from: address and User-Agent, cut to their columns."""
    agent = request.headers.get("User-Agent") or None
    return {"ip": request.remote_addr, "user_agent": agent[:256] if agent else None}


def start(
    user: User, sid: str, *, auth_time: int, connector: str, series: str | None = None
) -> None:
    """Record a new session (the caller commits); those past their lifetime are swept."""
    now = int(time.time())
    sweep(BrowserSession, lambda: (BrowserSession.expires_at < now,))
    db.session.add(
        BrowserSession(
            sid=sid,
            user_id=user.id,
            started_at=now,
            last_seen_at=now,
            expires_at=now + current_app.config["SESSION_LIFETIME"],
            auth_time=auth_time,
            connector=connector,
            series=series,
            **client_facts(),
        )
    )


def seen(sid: str, user_id: int | None = None) -> bool:
    """Whether `sid` is a live session; notes that it was seen (at most once a minute). The
    account `user_id` is read with it, into the session (db.session.get finds it there)."""
    now = int(time.time())
    row = read_one(LIVE, {"sid": sid, "now": now, "uid": user_id})
    if row is None:
        return False
    # Held for the request: the session's identity map keeps only what something else holds.
    g.idp_session_account = None if row.id is None else adopt(User, row._mapping)
    if now - row.last_seen_at >= SEEN_EVERY:
        db.session.execute(TOUCH, {"session_id": sid, "now": now, "ip": request.remote_addr})
        db.session.commit()
    return True


def of_user(user: User) -> list[BrowserSession]:
    """The account's live sessions, the most recently seen first."""
    return list(
        db.session.scalars(
            select(BrowserSession)
            .where(BrowserSession.user_id == user.id, BrowserSession.expires_at > time.time())
            .order_by(BrowserSession.last_seen_at.desc(), BrowserSession.started_at.desc())
        )
    )


def find(user: User, sid: str) -> BrowserSession | None:
    """The live session `sid` of `user`, or None."""
    if not sid or len(sid) > 64 or not sid.isprintable():
        return None  # PostgreSQL refuses NUL in a string: never ask it
    row = db.session.get(BrowserSession, sid)
    if row is None or row.user_id != user.id or row.expires_at <= time.time():
        return None
    return row


def end(user: User, sids: set[str], *, reason: str) -> int:
    """End the sessions `sids` of `user` on every node: their records go, their apps'
    tokens are revoked and the apps told (committed). Returns how many apps were told."""
    from identity.oidc.logout import end_sessions_by_sid

    sids = {s for s in sids if s}
    if not sids:
        return 0
    db.session.execute(
        delete(BrowserSession).where(
            BrowserSession.user_id == user.id, BrowserSession.sid.in_(sids)
        )
    )
    return end_sessions_by_sid(user, sids, reason=reason)


def of_series(user: User, series: str) -> set[str]:
    """The sids of the sessions a remember-me series started or restored."""
    return set(
        db.session.scalars(
            select(BrowserSession.sid).where(
                BrowserSession.user_id == user.id, BrowserSession.series == series
            )
        )
    )
