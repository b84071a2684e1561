"""The machine's Redis for the tests: its URL and a key prefix of each test's own."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

REDIS_URL = os.environ.get("IDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix():
    """A key prefix of this test's own in the machine's Redis; its keys are deleted after."""
    prefix = f"idp-test-{uuid.uuid4().hex[:12]}"
    server = redis.Redis.from_url(REDIS_URL)
    server.ping()  # fails the test (not skips it) when Redis is not running
    yield prefix
    keys = list(server.scan_iter(match=f"{prefix}:*"))
    if keys:
        server.delete(*keys)
    server.close()


def count_checkouts(app, monkeypatch) -> list:
    """The Redis connections `app`'s counters take from their pool, one item each, from now
    on: a round trip (one command or one pipeline) each."""
    pool = app.extensions["idp.throttle"].storage.get_connection().connection_pool
    checkouts: list = []
    take = pool.get_connection

    def counted(*args, **kwargs):
        checkouts.append(args)
        return take(*args, **kwargs)

    monkeypatch.setattr(pool, "get_connection", counted)
    return checkouts
