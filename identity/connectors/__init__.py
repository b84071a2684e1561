"""Connectors: each way of signing in turns what the user proves into one Identity."""

from identity.connectors.base import (
    ConnectorError,
    Identity,
    LockedOut,
    PasswordConnector,
    RedirectConnector,
    RedirectFailure,
)

__all__ = [
    "ConnectorError",
    "Identity",
    "LockedOut",
    "PasswordConnector",
    "RedirectConnector",
    "RedirectFailure",
]
