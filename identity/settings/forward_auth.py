"""The forward-authentication settings check, and the host-name rules it shares with the
forward-auth endpoints (a host under the cookie's domain)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from config import ConfigError

# One DNS label: letters, digits and inner hyphens (IDNs come as their xn-- form).
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def normal_host(text: object) -> str | None:
    """`text` as a lower-case ASCII host name without a trailing dot, or None when it is not
    one (an IP address, a port, non-ASCII, spaces, anything else)."""
    if not isinstance(text, str) or not 0 < len(text) <= 254:
        return None
    host = text.lower().removesuffix(".")
    if not HOST_NAME.fullmatch(host) or len(host) > 253 or host.replace(".", "").isdigit():
        return None
    return host


def under(host: str, domain: str) -> bool:
    """Whether `host` is `domain` or one of its subdomains (both normal_host values)."""
    return host == domain or host.endswith("." + domain)


def forward_auth_settings(cfg: Any) -> None:
    """IDP_FORWARD_AUTH_COOKIE_DOMAIN: a host name with a dot, and this service under it
    (a browser takes a cookie for a domain only from a host under that domain)."""
    value = cfg["FORWARD_AUTH_COOKIE_DOMAIN"]
    if value is None or value == "":
        cfg["FORWARD_AUTH_COOKIE_DOMAIN"] = None
        return
    domain = normal_host(value.removeprefix(".") if isinstance(value, str) else value)
    if domain is None or "." not in domain:
        raise ConfigError(
            "IDP_FORWARD_AUTH_COOKIE_DOMAIN must be a domain name such as example.org, "
            f"not {value!r}"
        )
    issuer_host = normal_host(urlsplit(cfg["ISSUER"]).hostname or "")
    if issuer_host is None or not under(issuer_host, domain):
        raise ConfigError(
            f"IDP_FORWARD_AUTH_COOKIE_DOMAIN ({domain}) must contain this service's own host "
            f"(IDP_ISSUER is {cfg['ISSUER']}): browsers accept its cookie only from there"
        )
    cfg["FORWARD_AUTH_COOKIE_DOMAIN"] = domain
