"""all.py's LDAP sign-in parts: a real slapd (tests/ldap_server.py: people, groups with one
nested group, the ppolicy and memberof overlays), the service's IDP_LDAP_* settings for it,
and the ceiling: raw ldap3 search (as the service account, (uid=ada) under the people base,
the attributes the connector asks for) + bind (as ada, with the password policy control the
connector sends) per second, each process with one connection for searches and one for
binds, reused, as the connector's pools do; the service not running."""

from __future__ import annotations

import sys
from pathlib import Path

from _common import ROOT, BenchError, measure_processes, timed_loop

# tests/ldap_server.py (slapd) and the identity package (its settings, for like-for-like).
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

USERNAME = "ada"
FILTER = "(uid={username})"  # the connector's default IDP_LDAP_USER_FILTER


def start_directory(workdir: Path):
    """(directory, d, slapd pid): slapd started by tests/ldap_server.py in workdir, and what
    the raw loop and the service need to know of it (d). Stop it with directory.stop()."""
    from ldap_server import SlapdError, launch

    try:
        directory = launch(workdir)
    except SlapdError as exc:
        raise BenchError(f"cannot start slapd: {exc}") from exc
    try:
        slapd_pid = int((workdir / "slapd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        directory.stop()
        raise BenchError(f"slapd wrote no pid file: {exc}") from exc
    d = dict(
        url=directory.url,
        bind_dn=directory.bind_dn,
        bind_password=directory.bind_password,
        people_dn=directory.people_dn,
        groups_dn=directory.groups_dn,
        password=directory.passwords[USERNAME],
    )
    return directory, d, slapd_pid


def ldap_env(d: dict) -> dict[str, str]:
    """IDP_LDAP_* for the service: slapd over plain ldap:// (no StartTLS, like the raw loop),
    group search on (IDP_LDAP_GROUP_BASE, nested groups followed). The server runs as
    production does, which refuses plain ldap:// unless told that it is meant (loopback)."""
    return dict(
        IDP_LDAP_URL=d["url"],
        IDP_LDAP_START_TLS="false",
        IDP_ALLOW_INSECURE_LDAP_PLAINTEXT="true",
        IDP_LDAP_BIND_DN=d["bind_dn"],
        IDP_LDAP_BIND_PASSWORD=d["bind_password"],
        IDP_LDAP_USER_BASE=d["people_dn"],
        IDP_LDAP_GROUP_BASE=d["groups_dn"],
    )


def check_raw(d: dict) -> None:
    """One raw search+bind; BenchError with the reason."""
    op, done = _ldap_op(d)
    try:
        err = op()
    finally:
        done()
    if err:
        raise BenchError(f"raw search+bind as {USERNAME} failed: {err}")


def measure_ceiling(d: dict, procs: int, seconds: float, warmup: float, probes) -> dict:
    """Raw ldap3 search+bind on reused connections, `procs` processes."""
    return measure_processes(_ldap_worker, (d,), procs, seconds, warmup, probes)


def _ldap_worker(start: float, warmup: float, seconds: float, out, d: dict) -> None:
    op, done = _ldap_op(d)
    try:
        out.put(timed_loop(op, start, warmup, seconds))
    finally:
        done()


def _ldap_op(d: dict):
    """(op, done): op() does one search+bind as the connector does it on the wire (same
    connection options, attributes and bind control) on two reused connections, as the
    connector's pools do, and returns an error text or None; done() closes them."""
    from ldap3 import NONE, SIMPLE, SUBTREE, Connection, Server

    from identity.connectors.ldap_answers import PPOLICY_OID
    from identity.connectors.ldap_connection import Settings, close

    attributes = Settings(urls=(d["url"],), group_base=d["groups_dn"]).user_attributes
    flt = FILTER.format(username=USERNAME)
    server = Server(d["url"], get_info=NONE, connect_timeout=5)

    def connect(user: str | None = None, password: str | None = None) -> Connection:
        conn = Connection(
            server,
            user=user,
            password=password,
            authentication=SIMPLE if user else None,
            receive_timeout=5,
            raise_exceptions=False,
            auto_referrals=False,
            read_only=True,
        )
        conn.open()
        if user and not conn.bind():
            raise BenchError(f"service bind failed: {conn.result}")
        return conn

    def search_bind(svc: Connection, usr: Connection) -> str | None:
        if not svc.search(d["people_dn"], flt, search_scope=SUBTREE, attributes=attributes):
            return f"search: {svc.result.get('description')}"
        entries = [e for e in svc.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            return f"search found {len(entries)} entries"
        ok = usr.rebind(
            user=entries[0]["dn"], password=d["password"], controls=[(PPOLICY_OID, False, None)]
        )
        if not ok:
            return f"bind: {usr.result.get('description')}"
        return None

    svc, usr = connect(d["bind_dn"], d["bind_password"]), connect()

    def done() -> None:
        close(svc)
        close(usr)

    return (lambda: search_bind(svc, usr)), done
