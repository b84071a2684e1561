"""The company directory (ldap3): search-then-bind or a DN template, groups, account state."""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ldap3 import BASE, NONE, SIMPLE, SUBTREE, Connection, Server
from ldap3.core.exceptions import (
    LDAPException,
    LDAPInvalidFilterError,
    LDAPSocketOpenError,
    LDAPStartTLSError,
)
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
from identity.connectors.ldap_tls import CheckedTls
from identity.settings.ldap import normal_dn

log = logging.getLogger("identity.ldap")

# OpenLDAP ppolicy: present when the account is locked (by an administrator, or by failed binds).
LOCKED_TIME = "pwdAccountLockedTime"
# Answers to the service account's bind that a setting fixes, not time: no such object,
# invalid DN syntax, inappropriate authentication, insufficient access, invalid
# credentials, unwilling to perform (its password expired or locked, say).
SERVICE_BIND_FAULTS = {32, 34, 48, 49, 50, 53}
# Answers to a search that a setting fixes: the base does not exist or is not a DN.
SEARCH_FAULTS = {32: "does not exist", 34: "is not a valid DN"}


@dataclass(frozen=True)
class Settings:
    """The LDAP_* settings, read once from the app config."""

    urls: tuple[str, ...]
    start_tls: bool = False
    ca_file: str | None = None
    skip_verify: bool = False
    bind_dn: str | None = None
    bind_password: str | None = field(default=None, repr=False)
    anonymous_search: bool = False
    user_base: str | None = None
    user_filter: str = "(uid={username})"
    user_dn_template: str | None = None
    connect_timeout: float = 5
    read_timeout: float = 5
    pool_size: int = 4
    id_attribute: str = "entryUUID"
    username_attribute: str = "uid"
    email_attribute: str = "mail"
    name_attribute: str = "displayName"
    email_verified: bool = True
    group_base: str | None = None
    group_filter: str = "(|(member={dn})(uniqueMember={dn})(memberUid={username}))"
    group_name_attribute: str = "cn"
    memberof_attribute: str = "memberOf"
    nested_groups: bool = True
    admin_group: str | None = None

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> Settings:
        names = {f: f"LDAP_{f.upper()}" for f in cls.__dataclass_fields__}
        names.update(urls="LDAP_URL", skip_verify="LDAP_TLS_INSECURE_SKIP_VERIFY")
        values = {f: cfg[key] for f, key in names.items() if key in cfg}
        values["urls"] = tuple(values.get("urls") or ())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def user_attributes(self) -> list[str]:
        attrs = [
            self.id_attribute,
            self.username_attribute,
            self.email_attribute,
            self.name_attribute,
            "cn",
            "userAccountControl",
        ]
        if not self.group_base:
            attrs.append(self.memberof_attribute)
        return attrs


def close(conn: Connection) -> None:
    """Unbind and close the socket: ldap3 2.9.1 leaves it open when the connect was refused
    or the TLS handshake failed (the connection never counted as open)."""
    try:
        with contextlib.suppress(LDAPException, OSError):
            conn.unbind()
    finally:
        sock = getattr(conn, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
            conn.socket = None


def make_server(url: str, s: Settings) -> Server:
    tls = CheckedTls(
        validate=ssl.CERT_NONE if s.skip_verify else ssl.CERT_REQUIRED,
        ca_certs_file=s.ca_file,
    )
    return Server(
        url,
        use_ssl=url.startswith("ldaps://"),
        tls=tls,
        get_info=NONE,
        connect_timeout=s.connect_timeout,
    )


def open_connection(
    s: Settings,
    user: str | None = None,
    password: str | None = None,
    *,
    urls: tuple[str, ...] | None = None,
) -> Connection:
    """An open (StartTLS-upgraded when configured) connection to the first URL that answers,
    bound as `user` when given. Raises ConnectorError when no URL could be used."""
    errors = []
    for url in urls or s.urls:
        conn = Connection(
            make_server(url, s),
            user=user,
            password=password,
            authentication=SIMPLE if user else None,
            receive_timeout=s.read_timeout,
            raise_exceptions=False,
            auto_referrals=False,
            read_only=True,
        )
        try:
            conn.open()
            if s.start_tls and url.startswith("ldap://") and not conn.start_tls():
                raise LDAPStartTLSError(f"StartTLS refused: {conn.result}")
            if user and not conn.bind():
                result = conn.result or {}
                close(conn)
                failure = (
                    f"service bind as {user} failed at {url}: {result.get('description')} "
                    f"{result.get('message')}".strip()
                )
                if result.get("result") in SERVICE_BIND_FAULTS:
                    raise DirectoryMisconfigured(
                        f"{failure}: check IDP_LDAP_BIND_DN and IDP_LDAP_BIND_PASSWORD"
                    )
                raise ConnectorError(failure)
            return conn
        except (LDAPSocketOpenError, LDAPStartTLSError, LDAPException, OSError) as exc:
            errors.append(f"{url}: {exc}")
            close(conn)
    if errors and all("certificate verify failed" in e.lower() for e in errors):
        # Every server answered with a certificate this service does not accept.
        raise DirectoryMisconfigured(
            "no directory server's certificate was accepted: "
            + "; ".join(errors)
            + ": check that IDP_LDAP_URL's host is among the certificate's names and that "
            "IDP_LDAP_CA_FILE is its CA (the admin console's directory tester shows both)"
        )
    raise ConnectorError("no directory server answered: " + "; ".join(errors))


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
            raise DirectoryMisconfigured(_base_fault(s, base, result))
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


def _base_fault(s: Settings, base: str, result: int) -> str:
    """What is wrong with `base`, and the setting it comes from."""
    if s.group_base and base == s.group_base and base != s.user_base:
        what, setting = "group search base", "IDP_LDAP_GROUP_BASE"
    elif s.user_base:
        what, setting = "user search base", "IDP_LDAP_USER_BASE"
    else:
        what, setting = "people's base", "IDP_LDAP_USER_DN_TEMPLATE"
    return f"the {what} {base} {SEARCH_FAULTS[result]} in the directory: check {setting}"


class _Pool:
    """Connections kept open across sign-ins. ldap3 has no pool of its own for the SYNC
    strategy; a new connection per sign-in measured ~80/s here against ~450/s reused."""

    def __init__(self, factory, size: int):
        self._factory = factory
        self._size = size
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._factory()
        healthy = False
        try:
            yield conn
            healthy = not conn.closed
        finally:
            if healthy and self._idle.qsize() < self._size:
                self._idle.put(conn)
            else:
                close(conn)

    def clear(self) -> None:
        while True:
            try:
                close(self._idle.get_nowait())
            except queue.Empty:
                return


class _Dead(Exception):
    """A pooled connection turned out to be closed (server restarted): retry on a new one."""


class LdapConnector:
    name = "ldap"

    def __init__(self, settings: Settings):
        self.s = settings
        self._lock = threading.Lock()
        self._search_pool = _Pool(self._service_connection, settings.pool_size)
        # Connections used only for checking passwords: each bind replaces the last identity,
        # so they never need re-binding as the service account.
        self._bind_pool = _Pool(lambda: open_connection(self.s), settings.pool_size)

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
                    raise DirectoryMisconfigured(_base_fault(self.s, base, conn.result["result"]))
                raise ConnectorError(
                    f"search {flt} under {base} failed: {conn.result.get('description')} "
                    f"{conn.result.get('message')}".strip()
                )
            return [
                {"dn": e["dn"], "attributes": e["raw_attributes"]}
                for e in conn.response or []
                if e.get("type") == "searchResEntry"
            ]

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
                entries = [
                    {"dn": e["dn"], "attributes": e["raw_attributes"]}
                    for e in conn.response or []
                    if e.get("type") == "searchResEntry"
                ]
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
            connector=self.name,
            subject=subject,
            username=username,
            email=first_text(attrs, self.s.email_attribute),
            email_verified=self.s.email_verified,
            name=first_text(attrs, self.s.name_attribute) or first_text(attrs, "cn"),
            groups=tuple(sorted(set(groups.values()))),
            group_dns=tuple(sorted(groups)),
            amr=("pwd",),
        )

    def groups(self, dn: str, username: str, attrs: dict) -> set[str]:
        """Group names: from a group search (nested groups followed) or from memberOf."""
        return set(self.group_entries(dn, username, attrs).values())

    def group_entries(self, dn: str, username: str, attrs: dict) -> dict[str, str]:
        """The person's groups, as normalised DN -> name: from a group search (nested groups
        followed) or from memberOf."""
        if not self.s.group_base:
            return {
                normal_dn(g) or g.lower(): rdn_value(g)
                for g in texts(attrs, self.s.memberof_attribute)
            }
        name_attr = self.s.group_name_attribute

        def named(found: list[dict]) -> dict[str, str]:
            return {
                normal_dn(g["dn"]) or g["dn"].lower(): first_text(g["attributes"], name_attr)
                or rdn_value(g["dn"])
                for g in found
            }

        flt = self.s.group_filter.format(
            dn=escape_filter_chars(dn), username=escape_filter_chars(username)
        )
        found = self._search(self.s.group_base, flt, [name_attr])
        groups = named(found)
        seen = {g["dn"].lower() for g in found}
        frontier = [g["dn"] for g in found]
        while self.s.nested_groups and frontier and len(seen) < 1000:
            flt = (
                "(|"
                + "".join(
                    f"(member={escape_filter_chars(d)})(uniqueMember={escape_filter_chars(d)})"
                    for d in frontier
                )
                + ")"
            )
            parents = [
                g
                for g in self._search(self.s.group_base, flt, [name_attr])
                if g["dn"].lower() not in seen
            ]
            for g in parents:
                seen.add(g["dn"].lower())
            groups.update(named(parents))
            frontier = [g["dn"] for g in parents]
        return groups

    # -- reading an entry again ---------------------------------------------------------

    def lookup(self, subject: str) -> Lookup:
        """The entry whose stable id (LDAP_ID_ATTRIBUTE) is `subject`, found wherever it now
        is (a renamed or moved person too), read as the service: gone, locked, or present
        with its identity as a sign-in would see it. Raises ConnectorError when the
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
        if texts(attrs, LOCKED_TIME) or (uac and uac.isdigit() and int(uac) & AD_DISABLED):
            return Lookup("locked", dn=entry["dn"])
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
    """What the directory says about an entry now: "gone", "locked" or "present"."""

    state: str
    dn: str | None = None
    identity: Identity | None = None


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
