"""Brute-force protection: sign-in lockouts per username and per client address, and the token
endpoint's limits, counted with `limits` in Redis (or in this process's memory)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Flask, current_app, request
from limits import RateLimitItem, parse, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry

from identity.names import fold

log = logging.getLogger("identity.throttle")

LOCKED = "Too many failed sign-in attempts. Wait {wait} and try again."
SLOW_DOWN = "Too many requests. Retry after {seconds} seconds."


def locked_message(seconds: int) -> str:
    """The one message of every sign-in lockout: it never says whether the account exists."""
    minutes = math.ceil(seconds / 60)
    return LOCKED.format(wait="a minute" if minutes <= 1 else f"{minutes} minutes")


def throttle() -> Throttle:
    return current_app.extensions["idp.throttle"]


def client_ip() -> str:
    """The client's address: the TCP peer, or what the trusted proxies say (ProxyFix)."""
    return request.remote_addr or "unknown"


class Throttle:
    """Counters in Redis or memory, as moving windows: a failure counts for exactly
    LOCKOUT_WINDOW seconds and a lock lasts exactly LOCKOUT_DURATION."""

    def __init__(self, app: Flask) -> None:
        cfg = app.config
        url = cfg["REDIS_URL"]
        options: dict[str, Any] = {}
        if url:
            options = {
                "key_prefix": cfg["REDIS_KEY_PREFIX"],
                "socket_connect_timeout": cfg["REDIS_TIMEOUT"],
                "socket_timeout": cfg["REDIS_TIMEOUT"],
                # One retry (a pooled connection the server closed), not redis-py's ten.
                "retry": Retry(NoBackoff(), 1),
            }
        # The counters, in Redis or this process's memory; with Redis, a memory fallback for
        # when it does not answer. `limits` directly (the library under Flask-Limiter):
        # Flask-Limiter's per-request hook cost ~19% of a bare request, for no limit of ours.
        self.storage = storage_from_string(url, **options) if url else MemoryStorage()
        self.primary = MovingWindowRateLimiter(self.storage)
        self.fallback = MovingWindowRateLimiter(MemoryStorage()) if url else None
        self._next_check = 0.0
        self._checks = 0
        self.where = _redacted(url) if url else None
        self.production = cfg["ENV"] == "production"
        self.trusted_proxies = cfg["TRUSTED_PROXIES"]
        window = cfg["LOCKOUT_WINDOW"]
        self.failures = {
            "account": parse(f"{cfg['LOCKOUT_ACCOUNT_FAILURES']}/{window} seconds"),
            "ip": parse(f"{cfg['LOCKOUT_IP_FAILURES']}/{window} seconds"),
        }
        self.lock = parse(f"1/{cfg['LOCKOUT_DURATION']} seconds")
        self.token_limits = parse_many(cfg["TOKEN_RATE_LIMIT"])
        self.token_failures = parse_many(cfg["TOKEN_FAILURE_RATE_LIMIT"])
        self._secret = str(cfg["SECRET_KEY"]).encode()
        self._degraded = False
        self._warned: set[str] = set()

    # -- sign-in ------------------------------------------------------------------------

    def signin_wait(self, username: str) -> int:
        """Seconds before `username` (as typed) may try to sign in from this address; 0: now.

        The same two lookups whether or not an account has that name, and no password check."""
        return max(self._lock_wait(scope, key) for scope, key in self._signin_keys(username))

    def signin_failed(self, username: str) -> list[str]:
        """Count a failed sign-in; returns the scopes it locked ("account", "ip")."""
        locked = []
        for scope, key in self._signin_keys(username):
            item = self.failures[scope]
            self._run("hit", item, "signin", scope, key)
            if not self._run("test", item, "signin", scope, key):
                self._run("hit", self.lock, "signin-lock", scope, key)
                # The next lock takes as many new failures as the first.
                self._run("clear", item, "signin", scope, key)
                locked.append(scope)
        return locked

    def _signin_keys(self, username: str) -> tuple[tuple[str, str], ...]:
        if not self.trusted_proxies and "X-Forwarded-For" in request.headers:
            self._warn_once(
                "xff",
                "a request carries X-Forwarded-For but IDP_TRUSTED_PROXIES is 0: if a proxy "
                "sets it, every client behind the proxy shares its address for the lockout",
            )
        # Keyed on what was typed, never on whether an account has it; hashed so that no
        # typed text (a password in the wrong field) is stored.
        return (("account", self._digest(fold(username))), ("ip", client_ip()))

    def _lock_wait(self, scope: str, key: str) -> int:
        stats = self._run("get_window_stats", self.lock, "signin-lock", scope, key)
        return 0 if stats.remaining else _seconds_until(stats.reset_time)

    # -- token endpoint -----------------------------------------------------------------

    def token_wait(self) -> int:
        """Seconds before this token request may be served; 0: now (it is counted against
        its client)."""
        ip = client_ip()
        for item in self.token_failures:
            stats = self._run("get_window_stats", item, "token-failures", ip)
            if not stats.remaining:
                return _seconds_until(stats.reset_time)
        client_id = _client_id()
        if not client_id:
            return 0  # it cannot authenticate: the failure limit above takes care of it
        key = self._digest(client_id)
        for item in self.token_limits:
            if not self._run("hit", item, "token", key):
                return _seconds_until(self._run("get_window_stats", item, "token", key).reset_time)
        return 0

    def token_failed(self) -> None:
        """Count a failed client authentication from this address."""
        for item in self.token_failures:
            self._run("hit", item, "token-failures", client_ip())

    # -- storage ------------------------------------------------------------------------

    def _digest(self, value: str) -> str:
        return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()[:32]

    def _run(self, method: str, item: RateLimitItem, *identifiers: str) -> Any:
        """Call the rate limiter. When Redis does not answer, count in this process's memory
        and ask Redis again after 1, 2, 4... (at most 60) seconds."""
        if self.where is None and self.production:
            self._warn_once(
                "memory",
                "IDP_REDIS_URL is not set: lockouts and token limits are counted per process, "
                "so each worker and node allows its own share",
            )
        if self._degraded and time.monotonic() >= self._next_check:
            self._checks += 1
            self._next_check = time.monotonic() + min(60, 2**self._checks)
            if self._storage_answers():
                log.info("rate-limit storage %s answers again", self.where)
                self._degraded = False
                self._checks = 0
        if not self._degraded:
            try:
                return getattr(self.primary, method)(item, *identifiers)
            except Exception as exc:
                if self.fallback is None:
                    raise
                log.warning(
                    "rate-limit storage %s unreachable (%s): counting in this process's memory "
                    "until it answers",
                    self.where,
                    exc,
                )
                self._degraded = True
                self._next_check = time.monotonic() + 1
        return getattr(self.fallback, method)(item, *identifiers)

    def _storage_answers(self) -> bool:
        try:
            return bool(self.storage.check())
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message)


def install(app: Flask) -> None:
    app.extensions["idp.throttle"] = Throttle(app)


def _seconds_until(timestamp: float) -> int:
    return max(1, math.ceil(timestamp - time.time()))


def _client_id() -> str | None:
    """The client_id the request claims: from Basic authentication, else from the form."""
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        return unquote(auth.username)  # RFC 6749 2.3.1: form-encoded before Basic
    return request.form.get("client_id") or None


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
