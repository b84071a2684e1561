"""The directory connector (ldap3): search-then-bind or a DN template, account state, lookups."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from ldap3 import BASE, SUBTREE, Connection
from ldap3.core.exceptions import LDAPException, LDAPInvalidFilterError
from ldap3.utils.conv import escape_bytes, escape_filter_chars
from ldap3.utils.dn import escape_rdn, to_dn

from identity.connectors.base import ConnectorError, DirectoryMisconfigured, Identity
from identity.connectors.ldap_answers import (
    AD_DISABLED,
    INVALID_CREDENTIALS,
    PPOLICY_OID,
    ad_reason,
    expired,
    must_change,
    ppolicy_error,
)
from identity.connectors.ldap_connection import Pool, Settings, close, open_connection
from identity.connectors.ldap_entries import first_text, stable_id, texts
from identity.connectors.ldap_groups import group_entries
from identity.connectors.registry import DIRECTORY, LDAP_LABEL

log = logging.getLogger("identity.ldap")

# OpenLDAP ppolicy: present when the account is locked, by an administrator (the value
# 000001010000Z: for ever) or by failed binds (the time of the lock: for pwdLockoutDuration).
LOCKED_TIME = "pwdAccountLockedTime"
LOCKED_FOR_EVER = "000001010000Z"
# Answers to a search that a setting fixes: the base does not exist or is not a DN.
SEARCH_FAULTS = {32: "does not exist", 34: "is not a valid DN"}


def base_fault(s: Settings, base: str, result: int) -> str:
    """What is wrong with `base`, and the setting it comes from."""
    if s.group_base and base == s.group_base and base != s.user_base:
        what, setting = "group search base", "IDP_LDAP_GROUP_BASE"
    elif s.user_base:
        what, setting = "user search base", "IDP_LDAP_USER_BASE"
    else:
        what, setting = "people's base", "IDP_LDAP_USER_DN_TEMPLATE"
    return f"the {what} {base} {SEARCH_FAULTS[result]} in the directory: check {setting}"


class _Dead(Exception):
    """A pooled connection turned out to be closed (server restarted): retry on a new one."""


class LdapConnector:
    id = "ldap"
    label = LDAP_LABEL
    icon = None
    kind = "password"
    # The directory vouches for people: a first sign-in creates the account.
    provisioning = DIRECTORY

    def __init__(self, settings: Settings):
        self.s = settings
        self._search_pool = Pool(self._service_connection, settings.pool_size)
        # Connections used only for checking passwords: each bind replaces the last identity,
        # so they never need re-binding as the service account.
        self._bind_pool = Pool(lambda: open_connection(self.s), settings.pool_size)

    def _service_connection(self) -> Connection:
        if self.s.bind_dn:
            return open_connection(self.s, self.s.bind_dn, self.s.bind_password)
        return open_connection(self.s)

    def close(self) -> None:
        self._search_pool.clear()
        self._bind_pool.clear()

    # -- PasswordConnector ---------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> Identity | None:
        """Raises AccountProblem (right password, account may not sign in) and
        ConnectorError (directory unreachable or misconfigured)."""
        # An empty password makes a simple bind anonymous, and anonymous binds "succeed".
        if not password or not username or len(username) > 256 or "\x00" in username:
            return None
        return self._with_retry(self._authenticate, username, password)

    def _with_retry(self, fn, *args):
        """Run fn; when a pooled connection turns out dead (the server restarted), drop
        the pools and run it once more on new connections."""
        try:
            return fn(*args)
        except (_Dead, LDAPException):
            self.close()
        try:
            return fn(*args)
        except (_Dead, LDAPException) as exc:
            self.close()
            raise ConnectorError(f"directory error: {type(exc).__name__}: {exc}") from exc

    def _authenticate(self, username: str, password: str) -> Identity | None:
        if self.s.user_dn_template:
            dn = self.s.user_dn_template.format(username=escape_rdn(username))
            entry = None
        else:
            entry = self.find_user(username)
            if entry is None:
                return None
            dn = entry["dn"]
        # Without a search, the entry is read as the user, over the connection just bound.
        checked = self._check_password(dn, password, read_entry=entry is None)
        if not checked:
            return None
        return self._identity(entry or checked)

    def authenticate_linked(self, subject: str, password: str) -> Identity | None:
        """The password of the entry whose stable id is `subject`, the one an account here is
        linked to: found by that id wherever it now is, and only it is bound, whatever entry
        the name typed would find. None for a wrong password or an entry that is gone.
        Raises as authenticate() does."""
        if not password:
            return None
        return self._with_retry(self._authenticate_linked, subject, password)

    def _authenticate_linked(self, subject: str, password: str) -> Identity | None:
        flt = self.id_filter(subject)
        found = self._search(self.user_base(), flt, self.s.user_attributes, missing_ok=False)
        if len(found) > 1:
            raise ConnectorError(f"{len(found)} entries have {self.s.id_attribute}={subject}")
        if not found or not self._check_password(found[0]["dn"], password):
            return None
        identity = self._identity(found[0])
        return identity if identity is not None and identity.subject == subject else None

    def look_up(self, username: str) -> bool:
        """Whether the directory has an entry for `username`, asked as the service and never
        with a bind: the search for its entry (with a DN template, that entry read). Also what
        a name whose password is checked elsewhere costs, as an unknown name's search does.
        Raises ConnectorError when the directory cannot answer."""
        if not username or len(username) > 256 or "\x00" in username:
            return False
        if self.s.user_dn_template:
            dn = self.s.user_dn_template.format(username=escape_rdn(username))
            return bool(self._with_retry(self._search, dn, "(objectClass=*)", ["1.1"], BASE))
        return self._with_retry(self.find_user, username) is not None

    def find_user(self, username: str) -> dict | None:
        """The one entry the filter finds for `username`, or None (none, or several)."""
        flt = self.s.user_filter.format(username=escape_filter_chars(username))
        # A missing base is a setting's fault, not a person who does not exist.
        entries = self._search(self.s.user_base, flt, self.s.user_attributes, missing_ok=False)
        if len(entries) != 1:
            if len(entries) > 1:
                log.warning("LDAP filter %s matched %d entries; refusing", flt, len(entries))
            return None
        return entries[0]

    def _search(
        self,
        base: str,
        flt: str,
        attributes: list[str],
        scope=SUBTREE,
        *,
        missing_ok: bool = True,
    ) -> list[dict]:
        """Entries under `base` matching `flt`. A missing base (result 32) finds nothing,
        or with missing_ok=False is an error: nobody is a leaver because a base is wrong."""
        with self._search_pool.connection() as conn:
            try:
                ok = conn.search(base, flt, search_scope=scope, attributes=attributes)
            except LDAPInvalidFilterError:
                # Checked before anything is sent: the filter setting is not a filter.
                raise DirectoryMisconfigured(
                    f"{flt} is not a valid LDAP filter: check IDP_LDAP_USER_FILTER "
                    "and IDP_LDAP_GROUP_FILTER"
                ) from None
            if conn.closed:
                raise _Dead(conn.result)
            tolerated = (0, 32) if missing_ok else (0,)
            if not ok and conn.result.get("result") not in tolerated:  # 32: no such object
                if conn.result.get("result") is None:
                    close(conn)
                    raise _Dead(conn.last_error)
                if conn.result.get("result") in SEARCH_FAULTS:
                    raise DirectoryMisconfigured(base_fault(self.s, base, conn.result["result"]))
                raise ConnectorError(
                    f"search {flt} under {base} failed: {conn.result.get('description')} "
                    f"{conn.result.get('message')}".strip()
                )
            return _entries(conn)

    def _check_password(self, dn: str, password: str, *, read_entry: bool = False):
        """False for a wrong password; else True, or the entry read as the user."""
        with self._bind_pool.connection() as conn:
            ok = conn.rebind(user=dn, password=password, controls=[(PPOLICY_OID, False, None)])
            result = conn.result or {}
            if conn.closed or result.get("result") is None:
                close(conn)
                raise _Dead(conn.last_error)
            policy = ppolicy_error(result)
            if ok:
                if policy == "changeAfterReset":
                    close(conn)  # this connection may only change the password now
                    raise must_change()
                if not read_entry:
                    return True
                conn.search(
                    dn, "(objectClass=*)", search_scope=BASE, attributes=self.s.user_attributes
                )
                entries = _entries(conn)
                if not entries:
                    raise ConnectorError(f"{dn} bound but its entry cannot be read")
                return entries[0]
            if result.get("result") != INVALID_CREDENTIALS:
                raise ConnectorError(
                    f"bind as {dn} failed: {result.get('description')} {result.get('message')}"
                )
            ad = ad_reason(result.get("message"))
            if policy == "passwordExpired" or (ad and ad[0] == "password_expired"):
                raise expired()
            if ad and ad[0] == "password_must_change":
                raise must_change()
            if policy == "accountLocked" or ad:
                log.info("directory refused %s: %s", dn, policy or ad[1])
            return False

    # -- entry to Identity ------------------------------------------------------------

    def _identity(self, entry: dict) -> Identity | None:
        attrs = entry["attributes"]
        uac = first_text(attrs, "userAccountControl")
        if uac and uac.isdigit() and int(uac) & AD_DISABLED:
            log.info("directory account %s is disabled (userAccountControl)", entry["dn"])
            return None
        subject = stable_id(attrs, self.s.id_attribute)
        if not subject:
            raise ConnectorError(f"{entry['dn']} has no {self.s.id_attribute}")
        username = first_text(attrs, self.s.username_attribute) or entry["dn"]
        groups = self.group_entries(entry["dn"], username, attrs)
        return Identity(
            connector=self.id,
            subject=subject,
            username=username,
            email=first_text(attrs, self.s.email_attribute),
            email_verified=self.s.email_verified,
            name=first_text(attrs, self.s.name_attribute) or first_text(attrs, "cn"),
            groups=tuple(sorted(set(groups.values()))),
            group_dns=tuple(sorted(groups)),
            amr=("pwd",),
        )

    def group_entries(self, dn: str, username: str, attrs: dict) -> dict[str, str]:
        """The person's groups, as normalised DN -> name: from a group search (nested groups
        followed) or from memberOf."""
        return group_entries(self.s, self._search, dn, username, attrs)

    # -- reading an entry again ---------------------------------------------------------

    def lookup(self, subject: str) -> Lookup:
        """The entry whose stable id (LDAP_ID_ATTRIBUTE) is `subject`, found wherever it now
        is (a renamed or moved person too), read as the service: gone, locked (by an
        administrator: for ever), locked_out (by failed binds: for a while), or present with
        its identity as a sign-in would see it. Raises ConnectorError when the
        directory cannot tell (unreachable, base missing, several entries)."""
        return self._with_retry(self._lookup, subject)

    def _lookup(self, subject: str) -> Lookup:
        attrs = [*self.s.user_attributes, LOCKED_TIME]
        found = self._search(self.user_base(), self.id_filter(subject), attrs, missing_ok=False)
        if not found:
            return Lookup("gone")
        if len(found) > 1:
            raise ConnectorError(f"{len(found)} entries have {self.s.id_attribute}={subject}")
        entry = found[0]
        attrs = entry["attributes"]
        uac = first_text(attrs, "userAccountControl")
        locks = texts(attrs, LOCKED_TIME)
        if LOCKED_FOR_EVER in locks or (uac and uac.isdigit() and int(uac) & AD_DISABLED):
            return Lookup("locked", dn=entry["dn"])
        if locks:
            return Lookup("locked_out", dn=entry["dn"])
        return Lookup("present", dn=entry["dn"], identity=self._identity(entry))

    def user_base(self) -> str:
        """Where people are searched: LDAP_USER_BASE, or the parent of the DN template's
        entries (uid={username},ou=people,dc=x -> ou=people,dc=x)."""
        if self.s.user_base:
            return self.s.user_base
        assert self.s.user_dn_template is not None  # config: one or the other is set
        return ",".join(to_dn(self.s.user_dn_template.format(username="x"))[1:])

    def id_filter(self, subject: str) -> str:
        """An equality filter on the stable id, escaped: objectGUID as its 16 bytes (the
        subject is their UUID form), anything else as text."""
        name = self.s.id_attribute
        if name.lower() == "objectguid":
            try:
                value = escape_bytes(uuid.UUID(subject).bytes_le)
            except ValueError:
                raise ConnectorError(f"{subject!r} is not an objectGUID") from None
        else:
            value = escape_filter_chars(subject)
        return f"({name}={value})"


@dataclass(frozen=True)
class Lookup:
    """What the directory says about an entry now: "gone", "locked", "locked_out" or
    "present"."""

    state: str
    dn: str | None = None
    identity: Identity | None = None


def _entries(conn) -> list[dict]:
    """The entries of the connection's last search, as {"dn", "attributes" (raw)}."""
    return [
        {"dn": e["dn"], "attributes": e["raw_attributes"]}
        for e in conn.response or []
        if e.get("type") == "searchResEntry"
    ]
