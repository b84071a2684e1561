"""The first administrator's settings (IDP_ADMIN_*): checked for shape."""

from __future__ import annotations

from typing import Any

from config import ConfigError

KEYS = ("ADMIN_USERNAME", "ADMIN_EMAIL", "ADMIN_PASSWORD", "ADMIN_PASSWORD_FILE")


def admin_settings(cfg: Any) -> None:
    """IDP_ADMIN_* are text settings (config.text_settings): read as typed, never as JSON,
    which would turn the password `123456789012` into a number and `"quoted"` into `quoted`.
    An empty value counts as unset (`${IDP_ADMIN_PASSWORD:-}` in compose.yaml). Refuse a
    password without a username, an e-mail address without the other, or both a password
    and a password file. The values themselves (username rules, the file, the password
    policy) are checked by `flask setup` when it creates the account, and only then: a
    restart after the password was removed from the environment keeps working."""
    for key in KEYS:
        value = cfg.get(key)
        cfg[key] = value if value not in ("", None) else None
        if cfg[key] is not None and not isinstance(cfg[key], str):
            raise ConfigError(f"IDP_{key} must be text, not {cfg[key]!r}")
    username, email = cfg["ADMIN_USERNAME"], cfg["ADMIN_EMAIL"]
    if (username is None) != (email is None):
        raise ConfigError(
            "IDP_ADMIN_USERNAME and IDP_ADMIN_EMAIL go together: set both (the first "
            "administrator) or neither"
        )
    secret = [k for k in ("ADMIN_PASSWORD", "ADMIN_PASSWORD_FILE") if cfg[k] is not None]
    if secret and username is None:
        raise ConfigError(
            f"IDP_{secret[0]} is set but IDP_ADMIN_USERNAME is not: set IDP_ADMIN_USERNAME "
            "and IDP_ADMIN_EMAIL for the first administrator"
        )
    if len(secret) == 2:
        raise ConfigError("set IDP_ADMIN_PASSWORD or IDP_ADMIN_PASSWORD_FILE, not both")
