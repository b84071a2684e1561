"""The lockout, rate-limit and Redis settings checks."""

from __future__ import annotations

from typing import Any

from config import ConfigError


def throttle_settings(cfg: Any) -> None:
    """Refuse lockout settings that would switch the protection off or cannot be parsed."""
    from limits import parse_many

    for key in (
        "LOCKOUT_ACCOUNT_FAILURES",
        "LOCKOUT_IP_FAILURES",
        "LOCKOUT_WINDOW",
        "LOCKOUT_DURATION",
    ):
        if cfg[key] < 1:
            raise ConfigError(f"IDP_{key} must be at least 1")
    for key in (
        "TOKEN_RATE_LIMIT",
        "TOKEN_FAILURE_RATE_LIMIT",
        "PASSWORD_CHECK_RATE_LIMIT",
        "REGISTRATION_RATE_LIMIT",
        "RESET_REQUEST_RATE_LIMIT",
        "RESET_EMAIL_RATE_LIMIT",
    ):
        try:
            items = parse_many(cfg[key]) if isinstance(cfg[key], str) else []
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ConfigError(
                f"IDP_{key}: {cfg[key]!r} is not a rate limit; write it like "
                f"'100/second' or '100/second;2000/minute'"
            )
    url = cfg["REDIS_URL"]
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "redis+unix://"))
    ):
        raise ConfigError(
            f"IDP_REDIS_URL must be a redis://, rediss:// or redis+unix:// URL, not {url!r}"
        )
    cfg["REDIS_KEY_PREFIX"] = str(cfg["REDIS_KEY_PREFIX"])
    if not cfg["REDIS_KEY_PREFIX"] or not cfg["REDIS_KEY_PREFIX"].isprintable():
        raise ConfigError("IDP_REDIS_KEY_PREFIX must be a non-empty printable string")
    timeout = cfg["REDIS_TIMEOUT"]
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(
            f"IDP_REDIS_TIMEOUT must be a positive number of seconds, not {timeout!r}"
        )
