"""The production server's settings checks: where it listens and how many workers it runs."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from config import ConfigError

_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def bind_address(value: Any) -> tuple[str, int]:
    """IDP_BIND as (host, port): `host:port`, `[v6 address]:port`; anything else refused."""
    text = value if isinstance(value, str) else ""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ok = _is_ip(host, 6)
    else:
        ok = _is_ip(host, 4) or bool(_HOST_NAME.fullmatch(host))
    if not ok or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"IDP_BIND must be host:port (127.0.0.1:8000, [::1]:8000), not {value!r}")
    return host, int(port)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def server_settings(cfg: Any) -> None:
    """Refuse an unusable IDP_BIND or IDP_WORKERS; WORKERS 0 becomes one per CPU core."""
    bind_address(cfg["BIND"])
    workers = cfg["WORKERS"]
    if not isinstance(workers, int) or isinstance(workers, bool) or not 0 <= workers <= 256:
        raise ConfigError(
            f"IDP_WORKERS must be a whole number from 1 to 256 (0: one per CPU core), "
            f"not {workers!r}"
        )
    cfg["WORKERS"] = workers or os.cpu_count() or 1
