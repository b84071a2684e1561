"""Reading a directory entry's raw attributes: texts, the stable id, a DN's first value."""

from __future__ import annotations

import uuid


def texts(attrs: dict, name: str) -> list[str]:
    for key, values in attrs.items():
        if key.lower() == name.lower():
            return [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
            ]
    return []


def first_text(attrs: dict, name: str) -> str | None:
    values = texts(attrs, name)
    return values[0] if values else None


def stable_id(attrs: dict, name: str) -> str | None:
    """The stable id as text; a 16-byte binary GUID (Active Directory) as its UUID form."""
    for key, values in attrs.items():
        if key.lower() == name.lower() and values:
            raw = values[0]
            if isinstance(raw, bytes) and len(raw) == 16 and name.lower() == "objectguid":
                return str(uuid.UUID(bytes_le=raw))
            return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return None


def rdn_value(dn: str) -> str:
    """'cn=engineers,ou=groups,...' -> 'engineers'."""
    from ldap3.utils.dn import parse_dn

    try:
        return parse_dn(dn)[0][1]
    except Exception:  # noqa: BLE001 - not a DN: keep it as it is
        return dn
