"""Subject identifiers (OpenID Connect Core 8): `public` (the account's UUID) or, per app,
`pairwise` (a pseudonym per sector, the redirect URIs' host, that apps elsewhere cannot
correlate)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from identity.secretbox import derived_key

SUBJECT_TYPES = ("public", "pairwise")
# HKDF's info: this key is for pairwise subjects only (identity.secretbox).
PURPOSE = b"identity pairwise subject v1"


def sector(redirect_uris: list[str]) -> str | None:
    """The sector identifier of these redirect URIs: their one host, or None when there are
    several (Core 8.1 would need a sector_identifier_uri, which is not supported)."""
    hosts = {(urlsplit(uri).hostname or "").lower() for uri in redirect_uris}
    return hosts.pop() if len(hosts) == 1 else None


def subject_type(client) -> str:
    meta = client.client_metadata if client is not None else {}
    return "pairwise" if meta.get("subject_type") == "pairwise" else "public"


def subject_for(client, user) -> str:
    """The `sub` that `client` sees for `user`: the same in every token, at userinfo, at
    introspection and in logout tokens; stable across restarts and nodes (derived from
    IDP_KEY_ENCRYPTION_KEY, else IDP_SECRET_KEY)."""
    if subject_type(client) != "pairwise":
        return user.subject
    host = sector(client.client_metadata.get("redirect_uris") or []) or client.client_id
    mac = hmac.new(
        derived_key(PURPOSE), f"{host}\x00{user.subject}".encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
