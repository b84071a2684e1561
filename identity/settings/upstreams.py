"""The checks of IDP_OIDC_UPSTREAMS: each upstream OpenID provider as an Upstream value.

`IDP_OIDC_UPSTREAMS` is a JSON list with one object per provider:

    [{"id": "corp", "issuer": "https://login.example.com", "client_id": "...",
      "client_secret": "...", "label": "Example Corp"}]

and optionally "scopes" (a string or a list; "openid" is required), "username_claim"
(default "preferred_username"), "groups_claim" (default none: no groups taken),
"trust_email_verified" (default false) and "enabled" (default true).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from config import ConfigError

# "oidc-" + id must fit linked_identities.connector (32 characters).
ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,26}")
CLAIM_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")
KEYS = {
    "id",
    "issuer",
    "client_id",
    "client_secret",
    "label",
    "scopes",
    "username_claim",
    "groups_claim",
    "trust_email_verified",
    "enabled",
}
DEFAULT_SCOPES = ("openid", "email", "profile")


@dataclass(frozen=True)
class Upstream:
    """One upstream OpenID provider, as configured."""

    id: str
    issuer: str
    client_id: str
    client_secret: str
    label: str
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    username_claim: str = "preferred_username"
    groups_claim: str | None = None
    trust_email_verified: bool = False

    @property
    def connector(self) -> str:
        """The connector name in linked_identities, sessions and the audit log."""
        return f"oidc-{self.id}"

    def __repr__(self) -> str:  # never the secret in a log line or a traceback
        return f"Upstream(id={self.id!r}, issuer={self.issuer!r})"


def upstream_settings(cfg: Any) -> None:
    """Replace cfg["OIDC_UPSTREAMS"] by the list of enabled Upstream values, or raise a
    one-line ConfigError naming the entry and what is wrong with it."""
    raw = cfg["OIDC_UPSTREAMS"]
    if isinstance(raw, str):  # not JSON: from_prefixed_env left it a string
        try:
            raw = json.loads(raw) if raw.strip() else []
        except ValueError:
            raise ConfigError(
                "IDP_OIDC_UPSTREAMS must be a JSON list of objects, like "
                '[{"id": "corp", "issuer": "https://...", "client_id": "...", '
                '"client_secret": "...", "label": "Corp"}]'
            ) from None
    if raw is None:
        raw = []
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"IDP_OIDC_UPSTREAMS must be a JSON list, not {type(raw).__name__}")
    upstreams: list[Upstream] = []
    seen: set[str] = set()
    for n, entry in enumerate(raw):
        if isinstance(entry, Upstream):
            upstream = entry
        else:
            where = f"IDP_OIDC_UPSTREAMS[{n}]"
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                where = f"IDP_OIDC_UPSTREAMS[{n}] ({entry['id']})"
            upstream = parse_entry(entry, where)
            if upstream is None:  # "enabled": false
                continue
        if upstream.id in seen:
            raise ConfigError(f"IDP_OIDC_UPSTREAMS: the id {upstream.id!r} is used twice")
        seen.add(upstream.id)
        upstreams.append(upstream)
    cfg["OIDC_UPSTREAMS"] = upstreams


def parse_entry(entry: Any, where: str) -> Upstream | None:
    """One entry as an Upstream (None when "enabled" is false); a ConfigError starting with
    `where` says what is wrong."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a JSON object")
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(KEYS)}")
    for key in ("id", "issuer", "client_id", "client_secret"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ConfigError(f"{where}: {key!r} is required (a string)")
    enabled = entry.get("enabled", True)
    trust = entry.get("trust_email_verified", False)
    for key, value in (("enabled", enabled), ("trust_email_verified", trust)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} must be true or false, not {value!r}")
    if not ID_RE.fullmatch(entry["id"]):
        raise ConfigError(
            f"{where}: 'id' must be 1 to 27 characters of a-z, 0-9, '-' and '_', starting "
            f"with a letter or digit, not {entry['id']!r} (it names the redirect URI)"
        )
    issuer = entry["issuer"]
    problem = issuer_problem(issuer)
    if problem:
        raise ConfigError(f"{where}: 'issuer' {problem}")
    scopes = entry.get("scopes", list(DEFAULT_SCOPES))
    if isinstance(scopes, str):
        scopes = scopes.split()
    if (
        not isinstance(scopes, list)
        or not all(
            isinstance(s, str) and re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", s) for s in scopes
        )
        or "openid" not in scopes
    ):
        raise ConfigError(f"{where}: 'scopes' must be a list of scopes that includes 'openid'")
    label = entry.get("label") or urlsplit(issuer).hostname or entry["id"]
    if not isinstance(label, str) or len(label) > 60 or any(ord(c) < 32 for c in label):
        raise ConfigError(f"{where}: 'label' must be a name of at most 60 characters")
    username_claim = entry.get("username_claim", "preferred_username")
    groups_claim = entry.get("groups_claim")
    for key, value in (("username_claim", username_claim), ("groups_claim", groups_claim)):
        if value is not None and not (isinstance(value, str) and CLAIM_RE.fullmatch(value)):
            raise ConfigError(f"{where}: {key!r} must be a claim name, not {value!r}")
    if not enabled:
        return None
    return Upstream(
        id=entry["id"],
        issuer=issuer,
        client_id=entry["client_id"],
        client_secret=entry["client_secret"],
        label=label,
        scopes=tuple(dict.fromkeys(scopes)),
        username_claim=username_claim,
        groups_claim=groups_claim,
        trust_email_verified=trust,
    )


def issuer_problem(issuer: str) -> str | None:
    """Why `issuer` cannot be an upstream's issuer (OpenID Connect Discovery 1.0, 2 and 4.3),
    or None."""
    try:
        parts = urlsplit(issuer)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"is not a URL: {issuer!r}"
    if parts.scheme != "https" or not parts.hostname:
        return f"must be an https:// URL, not {issuer!r}"
    if parts.query or parts.fragment or "#" in issuer:
        return f"must be a URL without query or fragment, not {issuer!r}"
    if parts.username or parts.password or any(ord(c) <= 32 or ord(c) > 126 for c in issuer):
        return f"must be a plain URL without user name, password or spaces, not {issuer!r}"
    return None
