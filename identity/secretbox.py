"""Secrets encrypted at rest: Fernet keys derived from KEY_ENCRYPTION_KEY (or SECRET_KEY)."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


def fernet(purpose: bytes) -> Fernet:
    """The Fernet key for one kind of secret (`purpose`, HKDF's info): each kind has its own
    key, all derived from the one configured secret, so that one cannot be swapped for another."""
    return Fernet(base64.urlsafe_b64encode(derived_key(purpose)))


def derived_key(purpose: bytes) -> bytes:
    """32 bytes for one use (`purpose`, HKDF's info) from KEY_ENCRYPTION_KEY, else SECRET_KEY:
    the same on every node and after a restart."""
    cfg = current_app.config
    secret = str(cfg["KEY_ENCRYPTION_KEY"] or cfg["SECRET_KEY"]).encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)
