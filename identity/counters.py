"""The counters under identity.throttle, in `limits`' storages: its memory storage without a
thread per hit, one call of its moving-window limiter, several in one round trip to Redis,
and the newest entry of a window taken back (which `limits` cannot do)."""

from __future__ import annotations

import time
from typing import Any

from limits import RateLimitItem
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import RateLimiter
from limits.util import WindowStats


class Memory(MemoryStorage):
    """`limits`' in-memory storage without a thread per hit. limits 5.8 starts a new
    threading.Timer whenever the previous one has fired (10 ms), so nearly every request
    under load started a thread: the largest cost of a token request counted in memory.
    Here expired entries are dropped inline, at most once a second; the moving windows
    read only entries still in them whatever is left in memory, so the counts are the same."""

    EXPIRE_EVERY = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._next_expiry = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # the pinned version's private hook
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + self.EXPIRE_EVERY
            self._MemoryStorage__expire_events()


def call(limiter: RateLimiter, method: str, item: RateLimitItem, identifiers: tuple) -> Any:
    if method == "give_back":
        return give_back_newest(limiter.storage, item.key_for(*identifiers))
    return getattr(limiter, method)(item, *identifiers)


def pipelined(limiter: RateLimiter, calls) -> list:
    """Moving-window calls (get_window_stats, hit, give_back) of `limits`' RedisStorage, sent
    in one round trip: its own Lua scripts, by their SHA on a pipeline, each answer read as the
    library reads it (MovingWindowRateLimiter, RedisStorage.get_moving_window and
    acquire_entry in limits 5.8; test_rate_limits' test_token_limits_count_* hold this to the
    pinned version). A script Redis does not know (restarted, flushed) runs the library's way,
    which loads it."""
    from redis.exceptions import NoScriptError  # here: a worker without Redis never loads it

    storage = limiter.storage
    now = time.time()
    pipe = storage.get_connection().pipeline(transaction=False)
    for method, item, identifiers in calls:
        key = storage.prefixed_key(item.key_for(*identifiers))
        expiry = item.get_expiry()
        if method == "give_back":  # as give_back_newest
            pipe.lpop(key)
            continue
        if method == "hit":
            script, args = storage.lua_acquire_moving_window, (now, item.amount, expiry, 1)
        elif method == "get_window_stats":
            script, args = storage.lua_moving_window, (now - expiry, item.amount)
        else:  # pragma: no cover - only these three are sent together
            raise ValueError(f"{method} is not pipelined")
        pipe.evalsha(script.sha, 1, key, *args)
    answers = []
    for (method, item, identifiers), raw in zip(
        calls, pipe.execute(raise_on_error=False), strict=True
    ):
        if isinstance(raw, NoScriptError):
            answers.append(call(limiter, method, item, identifiers))
        elif isinstance(raw, Exception):
            raise raw
        elif method == "give_back":
            answers.append(None)
        elif method == "hit":
            answers.append(bool(raw))
        else:
            start, count = (float(raw[0]), int(raw[1])) if raw else (now, 0)
            answers.append(WindowStats(start + item.get_expiry(), item.amount - count))
    return answers


def give_back_newest(storage: Any, key: str) -> None:
    """Remove the newest entry of a moving window. `limits` (5.8) can add entries and clear a
    window but not take one back; its two storages used here keep a moving window as a list,
    newest first (Redis: LPUSH; memory: inserted at index 0). test_bruteforce's
    test_a_success_* tests (memory and Redis) hold this to the pinned version."""
    if isinstance(storage, RedisStorage):
        storage.get_connection().lpop(storage.prefixed_key(key))
    elif isinstance(storage, MemoryStorage):
        with storage.locks[key]:
            events = storage.events.get(key)
            if events:
                events.pop(0)
    else:  # pragma: no cover - config refuses other storages
        raise TypeError(f"cannot give back an entry in {type(storage).__name__}")
