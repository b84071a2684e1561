"""One call records an audit event in the database and as one JSON log line."""

from __future__ import annotations

import json
import logging

from flask import has_request_context, request

from identity import ops
from identity.extensions import db
from identity.models import Event, User

log = logging.getLogger("identity.audit")


def record(type_: str, user: User | None = None, **data: object) -> Event:
    """Add an event to the current transaction (the caller commits) and log it.

    Callers pass only non-secret facts: method, reason code, username as typed.
    """
    ip = request.remote_addr if has_request_context() else None
    event = Event(type=type_, user_id=user.id if user else None, ip=ip, data=data)
    db.session.add(event)
    ops.count_event(type_, data)
    log.info(
        json.dumps(
            {"event": type_, "user_id": event.user_id, "ip": ip, **data},
            default=str,
            ensure_ascii=True,
        )
    )
    return event
