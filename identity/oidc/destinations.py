"""Where the provider may send back-channel requests: never, in production, to itself, to the
link-local network or to a cloud's metadata service (checked at registration on the name,
and at send time on the resolved address, so that DNS cannot point a name there later)."""

from __future__ import annotations

import ipaddress
import socket

from flask import current_app

# Cloud metadata services by name (GCP, Azure, AWS, Oracle, Alibaba) and by the addresses
# that are not link-local (AWS's IPv6 endpoint lies in the private fd00::/8).
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.oraclecloud.com",
        "metadata.tencentyun.com",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)


class ForbiddenDestination(ValueError):
    """The destination is refused; the message says why, for a person."""


def _production() -> bool:
    return current_app.config["ENV"] == "production"


def refusal(address: str) -> str | None:
    """Why a production provider must not send to `address` (an IP literal), or None."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata service"
    if ip.is_loopback or ip.is_unspecified:
        return "this machine (loopback)"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if ip.is_multicast or ip.is_reserved:
        return "a multicast or reserved address"
    return None  # private ranges stay allowed: intranet apps live there


def check_host(host: str) -> None:
    """At registration: refuse a name or IP literal that is never a valid destination in
    production (names are resolved again at each send)."""
    if not _production():
        return
    name = host.rstrip(".").lower()
    if name in METADATA_NAMES:
        raise ForbiddenDestination(f"{host} is a cloud metadata service")
    if name == "localhost" or name.endswith(".localhost"):
        raise ForbiddenDestination(f"{host} is this machine (loopback)")
    try:
        reason = refusal(name.strip("[]"))
    except ValueError:
        return  # a name: checked on its addresses at send time
    if reason:
        raise ForbiddenDestination(f"{host} is {reason}")


def resolve(host: str, port: int) -> str:
    """At send time: the address to connect to, every address of `host` checked (production),
    so that the connection goes to the address that was checked."""
    if _production():
        check_host(host)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ForbiddenDestination(f"{host} does not resolve: {exc}") from None
    addresses = [info[4][0] for info in infos]
    if _production():
        for address in addresses:
            reason = refusal(address)
            if reason:
                raise ForbiddenDestination(f"{host} resolves to {address}, {reason}")
    return addresses[0]
