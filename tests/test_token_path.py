"""What a token request pays for, kept cheap without changing what it does: in-memory
counting starts no thread per request, the token-table sweep is not built at every token,
and the JWKS document is built once per few seconds."""

from __future__ import annotations

import threading
import time

import limits.storage.memory as limits_memory
from limits import parse
from limits.strategies import MovingWindowRateLimiter

from identity.throttle import Memory


def test_in_memory_counting_starts_no_thread_per_hit(monkeypatch):
    storage = Memory()
    started = []

    class CountingTimer(threading.Timer):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(limits_memory.threading, "Timer", CountingTimer)
    limiter = MovingWindowRateLimiter(storage)
    limit = parse("100/minute")
    for _ in range(5):
        assert limiter.hit(limit, "client")
        time.sleep(0.02)  # limits' own storage has let its 10 ms timer fire: it starts another
    assert started == []
    assert limiter.get_window_stats(limit, "client").remaining == 95


def test_in_memory_counting_still_expires_and_trims():
    storage = Memory()
    limiter = MovingWindowRateLimiter(storage)
    limit = parse("2/second")
    assert limiter.hit(limit, "client") and limiter.hit(limit, "client")
    assert not limiter.hit(limit, "client")
    time.sleep(1.1)  # the window moves on
    storage._next_expiry = 0.0  # the next hit drops what has expired
    assert limiter.hit(limit, "client")
    assert [len(entries) for entries in storage.events.values()] == [1]


def test_the_token_sweep_is_built_only_when_it_is_due(idp, monkeypatch):
    from oidc_rp import App, register

    from identity.oidc import tokens

    built = []
    real = tokens.prunable_tokens
    monkeypatch.setattr(tokens, "prunable_tokens", lambda now: built.append(now) or real(now))
    machine = App(idp, register(idp, "batch", redirect_uris=[], grant_types=["client_credentials"]))
    for _ in range(3):
        response = machine.post("/token", {"grant_type": "client_credentials"})
        assert response.status_code == 200, response.text
    assert len(built) == 1  # the first token swept; the next sweep is a minute away


def test_the_jwks_document_is_built_again_only_when_the_keys_change(app, client):
    from sqlalchemy import event

    from identity.extensions import db
    from identity.oidc import keys

    first = client.get("/jwks.json")
    statements = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - the statement
    event.listen(engine, "before_cursor_execute", listener)
    try:
        again = client.get("/jwks.json")
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert again.data == first.data and again.headers["Cache-Control"] == "public, max-age=300"
    assert len(statements) == 1 and "max(" in statements[0].lower()
    with app.app_context():
        keys.rotate()
    rotated = client.get("/jwks.json").json["keys"]
    assert len(rotated) == len(first.json["keys"]) + len(app.config["SIGNING_ALGORITHMS"])
