"""What a proxy says about the request it asks about (X-Forwarded-Proto, -Host, -Uri), and
which addresses a person may be sent back to after signing in: https, under the domain."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import current_app, request

from identity.settings.forward_auth import normal_host, under

LONGEST_URI = 4096
# What a request target may hold as sent: printable ASCII without spaces.
_TARGET = re.compile(r"/[\x21-\x7e]*")
_HOST_PORT = re.compile(r"([^:]+)(?::([0-9]{1,5}))?")


class BadRequest(ValueError):
    """The proxy's headers cannot be used; the message says which and why."""


@dataclass
class Original:
    """The request the proxy asks about."""

    host: str  # normal_host, no port
    netloc: str  # host[:port], as the browser reaches it
    uri: str  # path and query, as sent

    @property
    def url(self) -> str:
        return f"https://{self.netloc}{self.uri}"


def _site(text: str) -> tuple[str, str] | None:
    """(host, host[:port]) of a Host-like value under the domain, or None."""
    match = _HOST_PORT.fullmatch(text)
    if not match:
        return None
    host = normal_host(match.group(1))
    port = match.group(2)
    if host is None or (port is not None and not 0 < int(port) < 65536):
        return None
    if not under(host, current_app.config["FORWARD_AUTH_COOKIE_DOMAIN"]):
        return None
    return host, host if port is None else f"{host}:{int(port)}"


def original() -> Original:
    """The original request from the proxy's X-Forwarded-* headers, or BadRequest."""
    proto = request.headers.get("X-Forwarded-Proto", "")
    host = request.headers.get("X-Forwarded-Host", "")
    uri = request.headers.get("X-Forwarded-Uri", "")
    if not proto or not host or not uri:
        raise BadRequest(
            "the proxy must send X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-Uri "
            "(docs/forward-auth.md has the configurations)"
        )
    if proto.strip().lower() != "https":
        raise BadRequest("X-Forwarded-Proto: protected sites must be served over https")
    site = _site(host.strip())
    if site is None:
        raise BadRequest(
            "X-Forwarded-Host is not a host name under "
            f"{current_app.config['FORWARD_AUTH_COOKIE_DOMAIN']} (IDP_FORWARD_AUTH_COOKIE_DOMAIN)"
        )
    if len(uri) > LONGEST_URI or not _TARGET.fullmatch(uri):
        raise BadRequest("X-Forwarded-Uri must be a path (printable ASCII, up to 4096 characters)")
    return Original(host=site[0], netloc=site[1], uri=uri)


def return_address(target: str | None) -> str | None:
    """`target` when it may be where a person goes after signing in: an https URL, without
    user name or password, whose host is under the domain; otherwise None."""
    if not target or len(target) > LONGEST_URI + 300:
        return None
    if not re.fullmatch(r"[\x21-\x7e]+", target) or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme != "https" or "@" in parts.netloc or not parts.netloc:
        return None
    if _site(parts.netloc) is None:
        return None
    if parts.path and not parts.path.startswith("/"):
        return None
    return target
