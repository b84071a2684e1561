"""Checking the directory settings without anybody's password (readiness, settings checks)."""

from __future__ import annotations

from ldap3 import BASE
from ldap3.core.exceptions import LDAPInvalidFilterError

from identity.connectors.base import ConnectorError, DirectoryMisconfigured
from identity.connectors.ldap import SEARCH_FAULTS, LdapConnector, base_fault
from identity.connectors.ldap_connection import Settings, close, open_connection


def probe(s: Settings) -> None:
    """Raises DirectoryMisconfigured or ConnectorError unless a server answers, the service
    account (when configured) binds, the user search base exists and the user filter is a
    filter: what every directory sign-in needs, checked without anybody's password."""
    conn = open_connection(s, s.bind_dn, s.bind_password) if s.bind_dn else open_connection(s)
    try:
        base = s.user_base or LdapConnector(s).user_base()
        flt = s.user_filter.format(username="probe")
        try:
            conn.search(base, flt, search_scope=BASE, attributes=[])
        except LDAPInvalidFilterError:
            raise DirectoryMisconfigured(
                f"{flt} is not a valid LDAP filter: check IDP_LDAP_USER_FILTER"
            ) from None
        answer = conn.result or {}
        result = answer.get("result")
        if result in SEARCH_FAULTS:
            raise DirectoryMisconfigured(base_fault(s, base, result))
        if result == 50:  # insufficientAccessRights
            raise DirectoryMisconfigured(
                f"the service account may not read {base}: check the directory's access rules"
            )
        if result != 0:
            raise ConnectorError(
                f"search under {base} failed: {answer.get('description')} "
                f"{answer.get('message') or ''}".strip()
            )
    finally:
        close(conn)
