"""Ports for servers that tests start in another process or after a delay.

A port from bind(port 0) is in the kernel's ephemeral range. Until the server listens, a
client connecting to it may be given that same port as its source and connect to itself
(TCP simultaneous open): it then holds the port, and the server fails to bind. Ports below
the ephemeral range are never handed to clients, so this cannot happen with them.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def listen_port() -> int:
    """A free loopback port outside the ephemeral range."""
    high = min(_ephemeral_low(), 32768) - 1
    for _ in range(200):
        port = random.randint(20000, high)  # noqa: S311 - not security-relevant
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between 20000 and {high}")
