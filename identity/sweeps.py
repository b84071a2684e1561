"""Expired rows pruned in bounded sweeps: a batch at most, once a minute per table and process.

Called on hot paths (sign-in, the token endpoint, a passkey challenge), so that nothing else
needs to run on a schedule, without a full scan of a table at every call."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import current_app
from sqlalchemy import delete, select

from identity.extensions import db

INTERVAL = 60  # seconds between two sweeps of one table, per process
BATCH = 1000  # rows deleted at most per sweep: a short transaction, a short lock


def sweep(model, conditions: Callable[[], tuple]) -> int:
    """Delete at most BATCH rows of `model` matching `conditions()`, in the caller's
    transaction, at most once every INTERVAL seconds per process and table; a full batch
    makes the next call sweep again. The conditions are built only when a sweep is due
    (building them cost more than the rest of storing a token). Returns how many rows went."""
    due = current_app.extensions.setdefault("idp.sweeps", {})
    if time.monotonic() < due.get(model.__tablename__, 0.0):
        return 0
    key = model.__mapper__.primary_key[0]
    ids = select(key).where(*conditions()).limit(BATCH)
    # A subquery of keys: DELETE ... LIMIT is neither standard nor in PostgreSQL.
    deleted = db.session.execute(
        delete(model)
        .where(key.in_(ids.scalar_subquery()))
        .execution_options(synchronize_session=False)
    ).rowcount
    due[model.__tablename__] = 0.0 if deleted >= BATCH else time.monotonic() + INTERVAL
    return deleted
