"""Registered apps kept in memory for IDP_CLIENT_CACHE_SECONDS: every token request looked its
app up in the database (an ORM load was ~12% of a client-credentials grant)."""

from __future__ import annotations

import time

from flask import Flask, current_app, g, has_app_context
from sqlalchemy import event, select

from identity.extensions import db
from identity.models import Client

# Enough for every app of a large organisation; past it the cache starts again (an unknown
# client_id is never cached, so a flood of made-up ids cannot grow it).
MAX_ENTRIES = 10_000


def lookup(client_id: str) -> Client | None:
    """The app registered as `client_id`: from this request, this process's cache, or the
    database. A cached app is detached from any session: read it, never change it."""
    known = g.setdefault("idp_clients", {})
    if client_id in known:
        return known[client_id]
    ttl = current_app.config["CLIENT_CACHE_SECONDS"]
    cache = _cache()
    now = time.monotonic()
    hit = cache.get(client_id)
    if hit is not None and hit[0] > now:
        client = hit[1]
    else:
        client = db.session.scalar(select(Client).where(Client.client_id == client_id))
        if client is not None and ttl:
            # Detached, so that a commit later in this request cannot expire its attributes.
            db.session.expunge(client)
            if len(cache) >= MAX_ENTRIES:
                cache.clear()
            cache[client_id] = (now + ttl, client)
    known[client_id] = client
    return client


def forget(client_id: str) -> None:
    """Drop an app from this process's cache (and this request's): it changed here."""
    if not has_app_context():
        return
    _cache().pop(client_id, None)
    known = g.get("idp_clients")
    if known is not None:
        known.pop(client_id, None)


def _cache() -> dict[str, tuple[float, Client]]:
    return current_app.extensions["idp.client_cache"]


def init_app(app: Flask) -> None:
    app.extensions["idp.client_cache"] = {}


# A change to an app through this process takes effect in it at once (other processes: TTL).
@event.listens_for(Client, "after_insert")
@event.listens_for(Client, "after_update")
@event.listens_for(Client, "after_delete")
def _changed(_mapper, _connection, target: Client) -> None:
    forget(target.client_id)
