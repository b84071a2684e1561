"""The audit log as the tests read it back: the events of one type, oldest first."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from identity.extensions import db
from identity.models import Event


def events(app: Flask, type_: str) -> list[Event]:
    """Still readable after the app context ends (loaded, then detached)."""
    with app.app_context():
        query = select(Event).where(Event.type == type_).order_by(Event.id)
        found = list(db.session.scalars(query))
        db.session.expunge_all()
        return found


def event_data(app: Flask, type_: str) -> list[dict]:
    return [e.data for e in events(app, type_)]
