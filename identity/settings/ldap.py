"""The directory (LDAP) settings checks, and the DN and {placeholder} template rules they use."""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

from config import ConfigError


def ldap_settings(cfg: Any) -> None:
    """Normalise LDAP_URL to a list, derive PASSWORD_CONNECTORS, and refuse half a setup."""
    urls = cfg["LDAP_URL"]
    if isinstance(urls, str):
        urls = [u for u in urls.replace(",", " ").split() if u]
    urls = list(urls or [])
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("ldap://", "ldaps://")):
            raise ConfigError(f"IDP_LDAP_URL: {url!r} is not an ldap:// or ldaps:// URL")
    cfg["LDAP_URL"] = [u.rstrip("/") for u in urls]  # ldap3 rejects a trailing slash
    if cfg["PASSWORD_CONNECTORS"] is None:
        cfg["PASSWORD_CONNECTORS"] = ["ldap", "local"] if urls else ["local"]
    if cfg["LDAP_ADMIN_GROUP"] is not None:
        given = str(cfg["LDAP_ADMIN_GROUP"]).strip()
        admin_dn = normal_dn(given)
        if admin_dn is None or "," not in admin_dn:
            # A bare name would match a group of that name anywhere in the directory.
            from ldap3.utils.dn import escape_rdn

            first = given if admin_dn else f"cn={escape_rdn(given)}"
            base = cfg["LDAP_GROUP_BASE"] or "ou=groups,dc=example,dc=org"
            raise ConfigError(
                f"IDP_LDAP_ADMIN_GROUP must be the group's full DN, such as {first},{base} "
                f"(not {given!r}: a name matches same-named groups elsewhere in the directory)"
            )
        cfg["LDAP_ADMIN_GROUP"] = admin_dn
    if not urls:
        return
    if not cfg["LDAP_USER_DN_TEMPLATE"] and not cfg["LDAP_USER_BASE"]:
        raise ConfigError(
            "IDP_LDAP_USER_BASE (search, then bind) or IDP_LDAP_USER_DN_TEMPLATE "
            "(direct bind) must be set with IDP_LDAP_URL"
        )
    for key, allowed, required in (
        ("LDAP_USER_FILTER", ("username",), "username"),
        ("LDAP_USER_DN_TEMPLATE", ("username",), "username"),
        ("LDAP_GROUP_FILTER", ("dn", "username"), None),
    ):
        if cfg[key] and (problem := template_problem(str(cfg[key]), allowed, required)):
            raise ConfigError(f"IDP_{key}: {problem}")
    # Also with a DN template: entries are read again, as the service, to find leavers.
    if not cfg["LDAP_BIND_DN"] and not cfg["LDAP_ANONYMOUS_SEARCH"]:
        raise ConfigError(
            "IDP_LDAP_BIND_DN must be set to search the directory "
            "(or IDP_LDAP_ANONYMOUS_SEARCH=true, if anonymous binds may read every person's "
            "entry): the service reads entries again to find people deleted or locked there"
        )
    if cfg["LDAP_BIND_DN"] and not cfg["LDAP_BIND_PASSWORD"]:
        raise ConfigError(
            "IDP_LDAP_BIND_PASSWORD must be set with IDP_LDAP_BIND_DN "
            "(an empty password would bind anonymously)"
        )
    if cfg["LDAP_CA_FILE"] and not Path(cfg["LDAP_CA_FILE"]).is_file():
        raise ConfigError(f"IDP_LDAP_CA_FILE: no such file: {cfg['LDAP_CA_FILE']}")


def normal_dn(dn: str) -> str | None:
    """`dn` in one canonical form (attribute types and values lower-cased, spaces around
    separators dropped, escapes rewritten the one way), so that two spellings of one DN
    compare equal; None when it is not a DN."""
    from ldap3.utils.dn import escape_rdn, parse_dn

    try:
        parts = parse_dn(dn.strip(), strip=True)
    except Exception:  # noqa: BLE001 - ldap3 raises several kinds for a malformed DN
        return None
    if not parts:
        return None
    out = []
    for attr, value, separator in parts:
        raw = _unescape_dn_value(value.strip())
        if raw is None or not attr.strip():
            return None
        out.append(f"{attr.strip().lower()}={escape_rdn(raw.lower())}{separator}")
    return "".join(out)


def _unescape_dn_value(value: str) -> str | None:
    """An RFC 4514 attribute value with its escapes (a backslash before a character, or
    before two hex digits) undone; None when it ends in a lone backslash or is not UTF-8."""
    data, i = bytearray(), 0
    while i < len(value):
        ch = value[i]
        if ch != "\\":
            data += ch.encode()
            i += 1
        elif re.fullmatch(r"[0-9a-fA-F]{2}", value[i + 1 : i + 3]):
            data.append(int(value[i + 1 : i + 3], 16))
            i += 3
        elif i + 1 < len(value):
            data += value[i + 1].encode()
            i += 2
        else:
            return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def template_problem(
    template: str, allowed: tuple[str, ...], required: str | None = "username"
) -> str | None:
    """Why `template` (an LDAP filter or DN with {placeholders}) cannot be used, or None.

    Literal braces must be doubled ({{ }}); only the `allowed` placeholders exist."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"{exc} (write a literal brace as {{{{ or }}}})"
    unknown = sorted(f for f in fields if f not in allowed)
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}}; use " + " and ".join(
            "{" + a + "}" for a in allowed
        )
    if required is not None and required not in fields:
        return f"must contain {{{required}}}"
    if not fields:
        return "must contain " + " or ".join("{" + a + "}" for a in allowed)
    return None
