"""Directory connections: the LDAP_* settings, opening (TLS, service bind), closing, a pool."""

from __future__ import annotations

import contextlib
import queue
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ldap3 import NONE, SIMPLE, Connection, Server
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError, LDAPStartTLSError

from identity.connectors.base import ConnectorError, DirectoryMisconfigured
from identity.connectors.ldap_tls import CheckedTls
from identity.one_at_a_time import waiting_elsewhere

# Answers to the service account's bind that a setting fixes, not time: no such object,
# invalid DN syntax, inappropriate authentication, insufficient access, invalid
# credentials, unwilling to perform (its password expired or locked, say).
SERVICE_BIND_FAULTS = {32, 34, 48, 49, 50, 53}


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


class Pool:
    """Connections kept open across sign-ins. ldap3 has no pool of its own for the SYNC
    strategy; a new connection per sign-in measured ~80/s here against ~450/s reused."""

    def __init__(self, factory, size: int):
        self._factory = factory
        self._size = size
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for the block, which is a wait on the directory: in a worker, other
        requests are answered meanwhile (identity.one_at_a_time.waiting_elsewhere), so the
        block touches nothing but this connection."""
        with waiting_elsewhere():
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
