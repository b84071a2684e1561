"""Brute-force protection: sign-in lockouts per username and per client address, the limits on
password checks, registrations, reset e-mails and the token endpoint, counted with `limits` in
Redis (or in this process's memory)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from flask import Flask, current_app, request
from limits import RateLimitItem, parse, parse_many
from limits.storage import RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from limits.util import WindowStats

from identity.counters import Memory, call, pipelined
from identity.names import fold
from identity.one_at_a_time import waiting_elsewhere

log = logging.getLogger("identity.throttle")

LOCKED = "Too many failed sign-in attempts. Wait {wait} and try again."
SLOW_DOWN = "Too many requests. Retry after {seconds} seconds."
BUSY = "Too many password checks from this address. Wait {wait} and try again."
CROWDED = "Too many sign-in attempts at once for this name. Wait a moment and try again."
# An attempt that finds the failure window full of attempts still being checked waits this
# long, looking again every QUEUE_POLL seconds, for one of them to end (a check takes
# milliseconds: an argon2 hash, a directory bind). It lets go of its worker meanwhile: the
# attempts it waits for may need the worker to end (their directory binds wait without it).
QUEUE_SECONDS = 3.0
QUEUE_POLL = 0.05


class Refusal(NamedTuple):
    """Why an attempt may not go on now, and the seconds before it may (Retry-After)."""

    wait: int
    message: str


def locked_message(seconds: int) -> str:
    """The one message of every sign-in lockout: it never says whether the account exists."""
    return LOCKED.format(wait=wait_text(seconds))


def wait_text(seconds: int) -> str:
    """A wait for people: "a minute", "15 minutes"."""
    minutes = math.ceil(seconds / 60)
    return "a minute" if minutes <= 1 else f"{minutes} minutes"


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
            # Imported here: a worker without Redis never loads its client (7 MB).
            from redis.backoff import NoBackoff
            from redis.retry import Retry

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
        self.storage = storage_from_string(url, **options) if url else Memory()
        self.primary = MovingWindowRateLimiter(self.storage)
        self.fallback = MovingWindowRateLimiter(Memory()) if url else None
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
        # What a correct request still costs: argon2 CPU per client address, accounts per
        # client address, reset e-mails per client and per target address (mail bombing).
        self.limits = {
            "password-checks": parse_many(cfg["PASSWORD_CHECK_RATE_LIMIT"]),
            "registrations": parse_many(cfg["REGISTRATION_RATE_LIMIT"]),
            "reset-requests": parse_many(cfg["RESET_REQUEST_RATE_LIMIT"]),
            "reset-emails": parse_many(cfg["RESET_EMAIL_RATE_LIMIT"]),
        }
        self.token_limits = parse_many(cfg["TOKEN_RATE_LIMIT"])
        self.token_failures = parse_many(cfg["TOKEN_FAILURE_RATE_LIMIT"])
        self._secret = str(cfg["SECRET_KEY"]).encode()
        self._degraded = False
        self._warned: set[str] = set()

    # -- sign-in ------------------------------------------------------------------------

    def signin_begin(self, username: str, *, costly: bool = True) -> Refusal | None:
        """Reserve one password check of `username` (as typed) from this address; None when
        reserved, else why not (nothing is then reserved). The caller ends a reservation with
        signin_failed (a wrong password) or signin_release (anything else). `costly`: the
        check costs a hash or a bind, so it also counts toward IDP_PASSWORD_CHECK_RATE_LIMIT
        (a passkey's signature check does not: its challenge was counted there).

        The reservation is a failure counted before the check, atomically (a hit that the
        window refuses when full): however many attempts run at once, on however many nodes
        sharing Redis, at most LOCKOUT_ACCOUNT_FAILURES wrong passwords are checked. When the
        window is full of attempts still being checked, this one waits (at most
        QUEUE_SECONDS, without its worker's lock) until one of them locks the name or gives
        its place back; at once refused as a crowd when the worker cannot be let go.

        One round trip to Redis: the places, then each scope's lock (read after the places
        are taken, so a failure elsewhere that locked the name before them is seen), then
        the check counted; what was taken is given back (in one more) when any refuses."""
        keys = self._signin_keys(username)
        places = self._places("hit", keys)
        locks = [("get_window_stats", self.lock, ("signin-lock", *key)) for key in keys]
        ip = client_ip()
        checks = [("hit", item, ("password-checks", ip)) for item in self.limits["password-checks"]]
        calls = places + locks + (checks if costly else [])
        deadline = time.monotonic() + QUEUE_SECONDS
        while True:
            answers = self._run_all(calls)
            placed = answers[: len(places)]
            taken = [
                call for call, ok in zip(calls, answers, strict=True) if call[0] == "hit" and ok
            ]
            wait = max(_wait(stats) for stats in answers[len(places) : len(places) + len(locks)])
            if wait:
                self._give_back(taken)
                return Refusal(wait, locked_message(wait))
            if not all(placed):
                self._give_back(taken)
                if time.monotonic() >= deadline:
                    return Refusal(1, CROWDED)
                with waiting_elsewhere() as others_go_on:
                    if not others_go_on:  # waiting here would hold up the attempts it waits for
                        return Refusal(1, CROWDED)
                    time.sleep(QUEUE_POLL)
                continue
            # Every check costs an argon2 hash or a directory bind, right or wrong: counted
            # as `use` counts it (the uses before a full limit stay counted, none after).
            used = answers[len(places) + len(locks) :]
            if all(used):
                return None
            full = used.index(False)
            self._give_back(
                places + [c for c, ok in zip(checks[full:], used[full:], strict=True) if ok]
            )
            method, item, identifiers = checks[full]
            wait = _seconds_until(self._run("get_window_stats", item, *identifiers).reset_time)
            return Refusal(wait, BUSY.format(wait=wait_text(wait)))

    def signin_release(self, username: str) -> None:
        """End a reservation that was no wrong password (right password, directory down,
        account problem): a success neither counts nor resets the count."""
        self._give_back(self._places("hit", self._signin_keys(username)))

    def signin_failed(self, username: str) -> list[str]:
        """End a reservation as a failed sign-in; returns the scopes it locked ("account",
        "ip")."""
        keys = self._signin_keys(username)
        # The reservation already counts this failure: a full window locks.
        counts = self._run_all(self._places("get_window_stats", keys))
        locked = []
        for (scope, key), stats in zip(keys, counts, strict=True):
            if not stats.remaining:
                self._run("hit", self.lock, "signin-lock", scope, key)
                # The next lock takes as many new failures as the first.
                self._run("clear", self.failures[scope], "signin", scope, key)
                locked.append(scope)
        return locked

    def _places(self, method: str, keys) -> list:
        """`method` on each scope's failure window, as _run_all takes calls."""
        return [(method, self.failures[scope], ("signin", scope, key)) for scope, key in keys]

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

    def _give_back(self, taken: list) -> None:
        """Take back the newest entry of each hit in `taken` (calls as _run_all takes them)."""
        if taken:
            self._run_all([("give_back", item, identifiers) for _, item, identifiers in taken])

    # -- registrations, reset e-mails, password checks ------------------------------------

    def use(self, limit: str, key: str) -> int:
        """Count one use of `limit` ("registrations", "reset-requests" per client address,
        "reset-emails" per target address...) for `key`: 0 when within it, else the seconds
        until it frees. Hit first, so that concurrent requests cannot all pass."""
        for item in self.limits[limit]:
            if not self._run("hit", item, limit, key):
                return _seconds_until(self._run("get_window_stats", item, limit, key).reset_time)
        return 0

    def give_back(self, limit: str, key: str) -> None:
        """Take back the newest use of `limit` for `key` (counted by `use`)."""
        for item in self.limits[limit]:
            self._run("give_back", item, limit, key)

    def email_key(self, email: str) -> str:
        """The key of an e-mail address for `use`: folded and hashed, never stored as typed."""
        return self._digest(fold(email))

    # -- token endpoint -----------------------------------------------------------------

    def token_wait(self) -> int:
        """Seconds before this token request may be served; 0: now (it is counted against
        its client). The address's failures are read and the client's request is counted
        together, in one round trip to Redis: a refused request is counted too."""
        ip = client_ip()
        calls = [("get_window_stats", item, ("token-failures", ip)) for item in self.token_failures]
        client_id = _client_id()
        if client_id:  # else it cannot authenticate: the failure limit takes care of it
            key = self._digest(client_id)
            calls += [("hit", item, ("token", key)) for item in self.token_limits]
        answers = self._run_all(calls)
        for (method, item, identifiers), answer in zip(calls, answers, strict=True):
            if method == "get_window_stats" and not answer.remaining:
                return _seconds_until(answer.reset_time)
            if method == "hit" and not answer:
                stats = self._run("get_window_stats", item, *identifiers)
                return _seconds_until(stats.reset_time)
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
        if self._primary_usable():
            try:
                return call(self.primary, method, item, identifiers)
            except Exception as exc:
                self._degrade(exc)
        return call(self.fallback, method, item, identifiers)

    def _run_all(self, calls: list[tuple[str, RateLimitItem, tuple[str, ...]]]) -> list:
        """_run each of `calls` (method, item, identifiers): in Redis in one round trip."""
        if isinstance(self.storage, RedisStorage) and self._primary_usable():
            try:
                return pipelined(self.primary, calls)
            except Exception as exc:
                self._degrade(exc)
        return [self._run(method, item, *identifiers) for method, item, identifiers in calls]

    def _primary_usable(self) -> bool:
        """Whether to count in the primary storage now (Redis, or memory without it): not
        while Redis is taken for down, but for a look every 1, 2, 4... (at most 60) seconds."""
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
        return not self._degraded

    def _degrade(self, exc: Exception) -> None:
        """The primary storage failed: count in memory until it answers again (Redis), or
        raise (memory has no fallback)."""
        if self.fallback is None:
            raise exc
        log.warning(
            "rate-limit storage %s unreachable (%s): counting in this process's memory "
            "until it answers",
            self.where,
            exc,
        )
        self._degraded = True
        self._next_check = time.monotonic() + 1

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


def _wait(stats: WindowStats) -> int:
    """Seconds until a window with no room left frees; 0 when it has room."""
    return 0 if stats.remaining else _seconds_until(stats.reset_time)


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


def lock_facts(scope: str, username: str) -> dict:
    """What the audit event of a lock says: which scope ("account", "ip") locked, after how
    many failures in which window, for how long; and, for an account lock, the name as
    folded (as typed: it need not be an account)."""
    cfg = current_app.config
    facts = {
        "reason": f"{scope}_failures",
        "failures": cfg[f"LOCKOUT_{scope.upper()}_FAILURES"],
        "window": cfg["LOCKOUT_WINDOW"],
        "duration": cfg["LOCKOUT_DURATION"],
    }
    if scope == "account":
        facts["username"] = fold(username)
    return facts
