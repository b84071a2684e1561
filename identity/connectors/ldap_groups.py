"""A person's directory groups: a group search (nested groups followed) or memberOf."""

from __future__ import annotations

from collections.abc import Callable

from ldap3.utils.conv import escape_filter_chars

from identity.connectors.ldap_connection import Settings
from identity.connectors.ldap_entries import first_text, rdn_value, texts
from identity.settings.ldap import normal_dn

# How the connector searches: (base, filter, attributes) -> [{"dn": ..., "attributes": ...}].
Search = Callable[[str, str, list[str]], list[dict]]


def group_entries(
    s: Settings, search: Search, dn: str, username: str, attrs: dict
) -> dict[str, str]:
    """The groups of the person at `dn` (with `username` and entry attributes `attrs`), as
    normalised DN -> name: from a group search under LDAP_GROUP_BASE through `search` (nested
    groups followed while fewer than 1000 are known), or from memberOf without a group base."""
    if not s.group_base:
        return {normal_dn(g) or g.lower(): rdn_value(g) for g in texts(attrs, s.memberof_attribute)}
    name_attr = s.group_name_attribute

    def named(found: list[dict]) -> dict[str, str]:
        return {
            normal_dn(g["dn"]) or g["dn"].lower(): first_text(g["attributes"], name_attr)
            or rdn_value(g["dn"])
            for g in found
        }

    flt = s.group_filter.format(dn=escape_filter_chars(dn), username=escape_filter_chars(username))
    found = search(s.group_base, flt, [name_attr])
    groups = named(found)
    seen = {g["dn"].lower() for g in found}
    frontier = [g["dn"] for g in found]
    while s.nested_groups and frontier and len(seen) < 1000:
        flt = (
            "(|"
            + "".join(
                f"(member={escape_filter_chars(d)})(uniqueMember={escape_filter_chars(d)})"
                for d in frontier
            )
            + ")"
        )
        parents = [g for g in search(s.group_base, flt, [name_attr]) if g["dn"].lower() not in seen]
        for g in parents:
            seen.add(g["dn"].lower())
        groups.update(named(parents))
        frontier = [g["dn"] for g in parents]
    return groups
