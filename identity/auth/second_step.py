"""The step between a first factor and a session: a pending sign-in, held in the signed
session cookie, that is no login (no `_user_id`) until the second factor passes."""

from __future__ import annotations

import secrets
import time

from flask import session

from identity.connectors.base import Identity
from identity.models import LinkedIdentity, User

KEY = "second_step"
# The sealed secret of an authenticator being enrolled, bound to this browser.
ENROLLING = "totp_enrolling"
LIFETIME = 5 * 60


def hold(user: User, link: LinkedIdentity, identity: Identity, *, remember: bool, enrol: bool):
    """Keep what the first factor proved in the (cleared) session: whose account (and its
    session epoch: a password change or "end sessions" meanwhile ends the step), which
    methods, the remember-me choice, the time and a random id."""
    session[KEY] = {
        "uid": user.id,
        "epoch": user.session_epoch,
        "link": link.id,
        "amr": list(identity.amr),
        "connector": identity.connector,
        "remember": bool(remember),
        "enrol": enrol,
        "next": None,
        "at": int(time.time()),
        "id": secrets.token_urlsafe(12),
    }


def pending() -> dict | None:
    """The pending sign-in, or None (none, or older than LIFETIME: then it is dropped)."""
    state = session.get(KEY)
    if not isinstance(state, dict):
        return None
    if not 0 <= time.time() - state.get("at", 0) <= LIFETIME:
        drop()
        return None
    return state


def expired() -> bool:
    """Whether a pending sign-in was there but is too old (for the message)."""
    state = session.get(KEY)
    return isinstance(state, dict) and pending() is None


def set_next(target: str | None) -> None:
    """Where to go once the step passes (already checked with safe_next)."""
    state = session.get(KEY)
    if isinstance(state, dict):
        session[KEY] = {**state, "next": target}


def drop() -> None:
    session.pop(KEY, None)
    session.pop(ENROLLING, None)
