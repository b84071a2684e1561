"""One call records an audit event in the database and as one JSON log line (or, for the
most frequent events of apps, only as the log line: log_only)."""

from __future__ import annotations

import json
import logging

from flask import has_request_context, request

from identity import metrics
from identity.extensions import db
from identity.models import Event, User

log = logging.getLogger("identity.audit")
# One statement, compiled once; each event is a set of parameters.
EVENT_INSERT = Event.__table__.insert()


def record(type_: str, user: User | None = None, **data: object) -> None:
    """Add an event to the current transaction (the caller commits) and log it.

    Callers pass only non-secret facts: method, reason code, username as typed.
    """
    db.session.add(Event(**_entry(type_, user, data)))


def insert(type_: str, user: User | None = None, **data: object) -> None:
    """record(), written at once with one INSERT instead of at the next flush: for the hot
    paths (token responses, sign-in), where the ORM's bookkeeping of a new object cost more
    than the write. Executed in the current transaction: the caller commits right after."""
    db.session.connection().execute(EVENT_INSERT, _entry(type_, user, data))


def row(type_: str, user: User | None = None, **data: object) -> dict:
    """An event's row, neither written nor logged yet: for a statement that writes it with
    others (identity.oidc.tokens), which announce()s it once written."""
    return {
        "type": type_,
        "user_id": user.id if user else None,
        "ip": request.remote_addr if has_request_context() else None,
        "data": data,
    }


def announce(entry: dict) -> None:
    """Log and count an event (a row of row()) as written."""
    metrics.count_event(entry["type"], entry["data"])
    log.info(
        json.dumps(
            {"event": entry["type"], "user_id": entry["user_id"], "ip": entry["ip"]}
            | entry["data"],
            default=str,
            ensure_ascii=True,
        )
    )


def log_only(type_: str, **data: object) -> None:
    """An event without a person, logged and counted but not stored: for those too frequent
    for the table (an app's own tokens, issued per call)."""
    _entry(type_, None, data)


def _entry(type_: str, user: User | None, data: dict) -> dict:
    entry = row(type_, user, **data)
    announce(entry)
    return entry
