"""A real OpenLDAP slapd on loopback for LDAP connector tests.

One slapd runs for the whole test session (fixture `slapd_directory`), with StartTLS on
`url` and LDAPS on `ldaps_url`, the ppolicy and memberof overlays, and a small directory of
people and groups (see `_people` and `_groups` below). The function-scoped `directory`
fixture hands it to a test and afterwards puts it back as it was: started again if the test
stopped it, and restored from a pristine copy of its database if anything in the directory
changed (found by comparing every entry, operational attributes included, with a snapshot).

Use it from a test module with ``pytest_plugins = ["ldap_server"]`` (registers the fixtures
once for the session) and ``from ldap_server import Directory, blackhole, dead_url``.

PYTEST_DONT_REWRITE: test modules import this module before pytest loads it as a plugin.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime as dt
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ldap3 import (
    BASE,
    MODIFY_REPLACE,
    NONE,
    SUBTREE,
    Connection,
    Server,
)
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn
from ports import listen_port

from identity import certs
from identity.connectors.ldap_connection import close

SLAPD_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/local/libexec"]
)
MODULE_PATH = os.environ.get("IDP_TEST_SLAPD_MODULES", "/usr/lib/ldap")
SCHEMA_DIR = os.environ.get("IDP_TEST_SLAPD_SCHEMA", "/etc/ldap/schema")
START_TIMEOUT = 15.0
RELAX_CONTROL = ("1.3.6.1.4.1.4203.666.5.12", True, None)  # rootdn may set pwdChangedTime

BASE_DN = "dc=example,dc=org"
PEOPLE_DN = f"ou=people,{BASE_DN}"
GROUPS_DN = f"ou=groups,{BASE_DN}"
SERVICES_DN = f"ou=services,{BASE_DN}"
POLICIES_DN = f"ou=policies,{BASE_DN}"
POLICY_DN = f"cn=default,{POLICIES_DN}"
OBRIEN = "O'Brien, Jr. (ops)*"

PASSWORDS = {
    "ada": "Analytical-Engine-1843",
    "grace": "COBOL compiler 1959!",
    "linus": "Ĺinux kernel 0.01 ñ",  # not ASCII on purpose: UTF-8 on the wire
    OBRIEN: "Pa55, (wo)rd*\\ops",
    "locked": "locked-out-forever-42",
    "expired": "expired-long-ago-2000",
    "mustchange": "reset-by-admin-7777",
}
SERVICE_PASSWORD = "idp-service-account-secret"
ADMIN_PASSWORD = "rootdn-admin-secret-99"
PWD_MAX_AGE = 365 * 24 * 3600


class SlapdError(RuntimeError):
    pass


def ssha(password: str) -> str:
    """{SSHA}: base64(SHA-1(password + salt) + salt), as slappasswd makes it."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def person_dn(uid: str) -> str:
    return f"uid={escape_rdn(uid)},{PEOPLE_DN}"


def group_dn(cn: str) -> str:
    return f"cn={escape_rdn(cn)},{GROUPS_DN}"


def _free_port() -> int:
    # Outside the ephemeral range: see ports.py (a self-connected probe would steal it).
    return listen_port()


def dead_url() -> str:
    """An ldap:// URL on loopback with nothing listening (connections are refused)."""
    return f"ldap://127.0.0.1:{_free_port()}"


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """An ldap:// URL whose socket accepts TCP connections (the kernel completes them) but
    never reads or answers: binds and searches against it hang until the client times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"ldap://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def slowed(url: str, delay: float) -> Iterator[str]:
    """An ldap:// URL in front of `url` (plain ldap://) that passes everything on, each
    answer of the directory `delay` seconds late: a directory far away or busy."""
    host, port = url.removeprefix("ldap://").rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[threading.Thread] = []

    def pipe(source: socket.socket, sink: socket.socket, wait: float) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                time.sleep(wait)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)  # ends the other direction too

    def connection(client: socket.socket) -> None:
        with client, socket.create_connection((host, int(port))) as server:
            answers = threading.Thread(target=pipe, args=(server, client, delay))
            answers.start()
            pipe(client, server, 0.0)
            answers.join()

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            connections.append(threading.Thread(target=connection, args=(client,)))
            connections[-1].start()

    accepting = threading.Thread(target=accept)
    accepting.start()
    try:
        yield f"ldap://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        accepting.join()
        for thread in connections:
            thread.join(10)


# ldap3 2.9.1 leaves the socket open after a refused connect or a failed TLS handshake;
# the connector's close() closes it too.
unbind_and_close = close


def _find(program: str) -> str:
    path = shutil.which(program, path=SLAPD_SEARCH_PATH)
    if not path:
        raise SlapdError(
            f"{program} not found (looked in PATH, /usr/sbin, /usr/local/sbin): LDAP tests "
            "need OpenLDAP's server; install it with "
            "`DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils`"
        )
    return path


def _gentime(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y%m%d%H%M%SZ")


def _ldif_entry(dn: str, attrs: dict[str, str | list[str]]) -> str:
    lines = [_ldif_line("dn", dn)]
    for name, values in attrs.items():
        for value in [values] if isinstance(values, str) else values:
            lines.append(_ldif_line(name, value))
    return "\n".join(lines) + "\n\n"


def _ldif_line(name: str, value: str) -> str:
    safe = value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<"))
    if safe and not value.endswith(" "):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode()).decode()}"


def _people(now: dt.datetime) -> dict[str, dict[str, str | list[str]]]:
    """uid -> attributes (without dn and userPassword)."""
    fresh = _gentime(now)
    people = {
        "ada": ("Ada", "Lovelace", "ada@example.org", {}),
        "grace": ("Grace", "Hopper", "grace@example.org", {}),
        "linus": ("Linus", "Torvalds", None, {}),
        OBRIEN: ("Pat", "O'Brien", "obrien@example.org", {"cn": OBRIEN}),
        # 000001010000Z: locked by an administrator, for ever (not by failed binds).
        "locked": (
            "Lou",
            "Locked",
            "locked@example.org",
            {"pwdAccountLockedTime": "000001010000Z"},
        ),
        # Changed in 2000, pwdMaxAge one year, pwdGraceAuthNLimit 0: expired, no grace binds.
        "expired": ("Eve", "Expired", "expired@example.org", {"pwdChangedTime": "20000101000000Z"}),
        # pwdReset TRUE with pwdMustChange TRUE: bind works, then only a password change.
        "mustchange": ("Max", "Mustchange", "mustchange@example.org", {"pwdReset": "TRUE"}),
    }
    out = {}
    for n, (uid, (given, sn, mail, extra)) in enumerate(people.items()):
        attrs: dict[str, str | list[str]] = {
            "objectClass": ["top", "inetOrgPerson", "posixAccount"],
            "uid": uid,
            "cn": f"{given} {sn}",
            "sn": sn,
            "givenName": given,
            "displayName": f"{given} {sn}",
            "uidNumber": str(10001 + n),
            "gidNumber": "10000",
            "homeDirectory": f"/home/{uid if uid.isalnum() else 'obrien'}",
            "loginShell": "/bin/bash",
            "pwdChangedTime": fresh,
        }
        if mail:
            attrs["mail"] = mail
        attrs.update(extra)
        out[uid] = attrs
    return out


def _groups() -> dict[str, dict[str, str | list[str]]]:
    """Added online, after slapd starts, so that the memberof overlay fills memberOf."""
    return {
        "engineers": {"objectClass": ["top", "groupOfNames"], "member": [person_dn("ada")]},
        "staff": {
            "objectClass": ["top", "groupOfUniqueNames"],
            "uniqueMember": [person_dn("grace"), person_dn("ada")],
        },
        "ops": {
            "objectClass": ["top", "posixGroup"],
            "gidNumber": "20001",
            "memberUid": ["grace"],
        },
        "idp-admins": {"objectClass": ["top", "groupOfNames"], "member": [person_dn("ada")]},
        # Nested: a group as a member. memberof gives engineers (not ada) memberOf: everyone.
        "everyone": {
            "objectClass": ["top", "groupOfNames"],
            "member": [group_dn("engineers"), person_dn("linus")],
        },
    }


def _slapd_conf(work: Path, tls: Path, d: Directory) -> str:
    schemas = "\n".join(
        f"include {SCHEMA_DIR}/{name}.schema" for name in ("core", "cosine", "inetorgperson", "nis")
    )
    return f"""\
{schemas}
modulepath {MODULE_PATH}
moduleload back_mdb
moduleload ppolicy
moduleload memberof
pidfile {work}/slapd.pid
argsfile {work}/slapd.args
# As permissive as Active Directory: a DN with no password binds anonymously (RFC 4513
# 5.1.2), so the connector's refusal of empty passwords is tested against the real risk.
allow bind_anon_dn
TLSCACertificateFile {tls}/{certs.CA_CERT}
TLSCertificateFile {tls}/{certs.TLS_CERT}
TLSCertificateKeyFile {tls}/{certs.TLS_KEY}
TLSVerifyClient never

database mdb
maxsize 67108864
dbnosync
suffix "{d.base_dn}"
rootdn "{d.admin_dn}"
rootpw {ssha(d.admin_password)}
directory {work}/db
index objectClass eq
index uid,cn,mail eq,sub
index member,uniqueMember,memberUid eq
index entryUUID eq

access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by * read

overlay ppolicy
ppolicy_default "{POLICY_DN}"
ppolicy_hash_cleartext
ppolicy_use_lockout

overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE

overlay memberof
memberof-group-oc groupOfUniqueNames
memberof-member-ad uniqueMember
memberof-memberof-ad memberOf
memberof-refint TRUE

# Operation counters (cn=Monitor), read by Directory.operations(): how often the service
# really asked the directory, counted by the server.
database monitor
access to dn.subtree="cn=Monitor"
    by dn.exact="{d.admin_dn}" read
    by * none
"""


def _static_ldif(d: Directory, now: dt.datetime) -> str:
    parts = [
        _ldif_entry(
            d.base_dn,
            {"objectClass": ["top", "dcObject", "organization"], "dc": "example", "o": "Example"},
        )
    ]
    for ou in ("people", "groups", "services", "policies"):
        parts.append(
            _ldif_entry(f"ou={ou},{d.base_dn}", {"objectClass": "organizationalUnit", "ou": ou})
        )
    parts.append(
        _ldif_entry(
            d.bind_dn,
            {
                "objectClass": ["top", "organizationalRole", "simpleSecurityObject"],
                "cn": "idp",
                "description": "The identity provider's service account",
                "userPassword": ssha(d.bind_password),
            },
        )
    )
    parts.append(
        _ldif_entry(
            POLICY_DN,
            {
                "objectClass": ["top", "device", "pwdPolicy"],
                "cn": "default",
                "pwdAttribute": "userPassword",
                "pwdLockout": "TRUE",
                "pwdMaxAge": str(PWD_MAX_AGE),
                "pwdMustChange": "TRUE",
                "pwdGraceAuthNLimit": "0",
                "pwdAllowUserChange": "TRUE",
            },
        )
    )
    for uid, attrs in _people(now).items():
        parts.append(_ldif_entry(person_dn(uid), {**attrs, "userPassword": ssha(d.passwords[uid])}))
    return "".join(parts)


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """slapd gets SIGTERM if pytest dies without stopping it (Linux only). The signal comes
    when the starting *thread* ends, so start() only asks for it from the main thread."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Directory:
    url: str
    ldaps_url: str
    ca_file: str
    wrong_ca_file: str
    base_dn: str = BASE_DN
    people_dn: str = PEOPLE_DN
    groups_dn: str = GROUPS_DN
    bind_dn: str = f"cn=idp,{SERVICES_DN}"
    bind_password: str = SERVICE_PASSWORD
    admin_dn: str = f"cn=admin,{BASE_DN}"
    admin_password: str = ADMIN_PASSWORD
    passwords: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS))
    policy_dn: str = POLICY_DN
    workdir: Path | None = field(default=None, repr=False)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _snapshot: dict | None = field(default=None, init=False, repr=False)
    restores: int = field(default=0, init=False, repr=False)  # how often reset() restored
    _monitor_reads: int = field(default=0, init=False, repr=False)

    # -- names ----------------------------------------------------------------------------
    def dn(self, uid: str) -> str:
        """DN of a person, with the RDN value escaped (uid=O'Brien\\, Jr. (ops)*,...)."""
        return f"uid={escape_rdn(uid)},{self.people_dn}"

    def group_dn(self, cn: str) -> str:
        return f"cn={escape_rdn(cn)},{self.groups_dn}"

    # -- process --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start slapd on the same ports with the same data; return once it answers."""
        if self.running:
            return
        self._reap()
        assert self.workdir is not None
        log = open(self.workdir / "slapd.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [
                    _find("slapd"),
                    "-d",
                    "0",
                    "-f",
                    str(self.workdir / "slapd.conf"),
                    "-h",
                    f"{self.url}/ {self.ldaps_url}/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_pdeathsig
                if threading.current_thread() is threading.main_thread()
                else None,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise SlapdError(f"slapd exited with {code} on start:\n{self._log_tail()}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise SlapdError(
                    f"slapd did not answer on {self.url} within {START_TIMEOUT}s:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop slapd: the directory goes down (connections fail). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            proc.wait()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _answers(self) -> bool:
        port = int(self.url.rsplit(":", 1)[1])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        conn = Connection(Server(self.url, get_info=NONE, connect_timeout=1), receive_timeout=2)
        try:
            conn.open()
            return conn.search("", "(objectClass=*)", BASE, attributes=["namingContexts"])
        except LDAPException:
            return False
        finally:
            unbind_and_close(conn)

    def _log_tail(self, lines: int = 40) -> str:
        assert self.workdir is not None
        path = self.workdir / "slapd.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- data -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def admin(self) -> Iterator[Connection]:
        """A connection bound as the rootdn (plain ldap://, loopback)."""
        conn = Connection(
            Server(self.url, get_info=NONE, connect_timeout=5),
            self.admin_dn,
            self.admin_password,
            receive_timeout=10,
            raise_exceptions=False,
        )
        try:
            if not conn.bind():
                raise SlapdError(f"rootdn bind failed: {conn.result}")
            yield conn
        finally:
            unbind_and_close(conn)

    def modify(self, dn: str, changes: dict) -> None:
        """As the rootdn, replace each attribute's values (a value of None, or [], deletes
        the attribute). Sends the Relax control, so operational attributes that ppolicy
        lets an administrator manage (pwdChangedTime, pwdAccountLockedTime, pwdReset,
        pwdFailureTime) can be set too. The `directory` fixture undoes it after the test."""
        mods = {}
        for attr, value in changes.items():
            if value is None:
                values: list = []
            elif isinstance(value, list | tuple | set):
                values = list(value)
            else:
                values = [value]
            mods[attr] = [(MODIFY_REPLACE, values)]
        with self.admin() as conn:
            if not conn.modify(dn, mods, controls=[RELAX_CONTROL]):
                raise SlapdError(f"modify {dn} {changes!r} failed: {conn.result}")

    def operations(self) -> int:
        """Binds and searches the server has completed since it started, as it counts them
        (cn=Monitor), less those of these questions themselves. Compare two readings taken
        while slapd keeps running (a restart sets the counters back to 0)."""
        counts = self.completed()
        return counts["bind"] + counts["search"]

    def completed(self) -> dict[str, int]:
        """The same counts apart: {"bind": n, "search": n}."""
        with self.admin() as conn:
            ok = conn.search(
                "cn=Operations,cn=Monitor",
                "(|(cn=Bind)(cn=Search))",
                SUBTREE,
                attributes=["cn", "monitorOpCompleted"],
            )
            if not ok:
                raise SlapdError(f"cn=Monitor search failed: {conn.result}")
            counts = {
                e["raw_attributes"]["cn"][0].decode().lower(): int(
                    e["raw_attributes"]["monitorOpCompleted"][0]
                )
                for e in conn.response
            }
        # Not counted: this bind (completed) and every earlier reading's bind and search.
        self._monitor_reads += 1
        return {
            "bind": counts["bind"] - self._monitor_reads,
            "search": counts["search"] - (self._monitor_reads - 1),
        }

    def failed_binds(self, uid: str) -> dict[str, list[str]]:
        """What ppolicy wrote on the entry after wrong passwords: {"pwdFailureTime": [...],
        "pwdAccountLockedTime": [...]} (empty lists when nothing)."""
        names = ["pwdFailureTime", "pwdAccountLockedTime"]
        with self.admin() as conn:
            if not conn.search(self.dn(uid), "(objectClass=*)", BASE, attributes=names):
                raise SlapdError(f"no entry for uid {uid!r}: {conn.result}")
            raw = conn.response[0]["raw_attributes"]
        return {name: [v.decode() for v in raw.get(name, [])] for name in names}

    def entry_uuid(self, uid: str) -> str:
        with self.admin() as conn:
            if not conn.search(self.dn(uid), "(objectClass=*)", BASE, attributes=["entryUUID"]):
                raise SlapdError(f"no entry for uid {uid!r}: {conn.result}")
            return str(conn.entries[0].entryUUID.value)

    def _dump(self) -> dict[str, dict[str, list[bytes]]]:
        """Every entry with every attribute (user and operational), as raw values."""
        with self.admin() as conn:
            ok = conn.search(self.base_dn, "(objectClass=*)", SUBTREE, attributes=["*", "+"])
            if not ok:
                raise SlapdError(f"snapshot search failed: {conn.result}")
            return {
                e["dn"].lower(): {k.lower(): sorted(v) for k, v in e["raw_attributes"].items()}
                for e in conn.response
                if e.get("type") == "searchResEntry"
            }

    def changed(self) -> bool:
        return self._snapshot is not None and self._dump() != self._snapshot

    def reset(self) -> None:
        """Running again, with the data as after setup (restored only when it changed)."""
        if not self.running:
            self.start()
        if self.changed():
            self.stop()
            assert self.workdir is not None
            shutil.copyfile(self.workdir / "pristine.mdb", self.workdir / "db" / "data.mdb")
            self.start()
            self.restores += 1
            if self.changed():
                raise SlapdError("restoring the pristine database did not restore the data")

    # -- setup ----------------------------------------------------------------------------
    def _setup(self) -> None:
        """Write config and data, load them offline, add the groups online, keep a copy."""
        assert self.workdir is not None
        work = self.workdir
        (work / "db").mkdir(parents=True)
        now = dt.datetime.now(dt.UTC)
        (work / "slapd.conf").write_text(_slapd_conf(work, work / "tls", self))
        (work / "data.ldif").write_text(_static_ldif(self, now))
        result = subprocess.run(
            [
                _find("slapadd"),
                "-q",
                "-f",
                str(work / "slapd.conf"),
                "-l",
                str(work / "data.ldif"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise SlapdError(f"slapadd failed ({result.returncode}):\n{result.stderr}")
        self.start()
        with self.admin() as conn:
            for cn, attrs in _groups().items():
                if not conn.add(self.group_dn(cn), attributes={"cn": cn, **attrs}):
                    raise SlapdError(f"adding group {cn} failed: {conn.result}")
        self.stop()
        shutil.copyfile(work / "db" / "data.mdb", work / "pristine.mdb")
        self.start()
        self._snapshot = self._dump()


def launch(workdir: Path) -> Directory:
    """Create the CAs, the configuration and the data under workdir and start slapd."""
    for program in ("slapd", "slapadd"):
        _find(program)
    if not (Path(MODULE_PATH) / "back_mdb.la").exists():
        raise SlapdError(
            f"{MODULE_PATH}/back_mdb.la not found: set IDP_TEST_SLAPD_MODULES to the "
            "directory of slapd's modules (back_mdb, ppolicy, memberof)"
        )
    certs.ensure(workdir / "tls", ["localhost", "127.0.0.1"])
    certs.ensure(workdir / "wrong-ca", ["localhost", "127.0.0.1"])
    d = Directory(
        url=f"ldap://127.0.0.1:{_free_port()}",
        ldaps_url=f"ldaps://127.0.0.1:{_free_port()}",
        ca_file=str(workdir / "tls" / certs.CA_CERT),
        wrong_ca_file=str(workdir / "wrong-ca" / certs.CA_CERT),
        workdir=workdir,
    )
    atexit.register(d.stop)  # also when the session ends without fixture teardown
    try:
        d._setup()
    except BaseException:
        d.stop()
        raise
    return d


_shared: Directory | None = None


@pytest.fixture(scope="session")
def slapd_directory(tmp_path_factory) -> Iterator[Directory]:
    """One slapd for the whole session; fails (never skips) when slapd is missing."""
    global _shared
    if _shared is None:
        problem = None
        try:
            _shared = launch(tmp_path_factory.mktemp("slapd"))
        except SlapdError as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(f"cannot start the test LDAP server: {problem}", pytrace=False)
    d = _shared
    assert d is not None
    yield d
    d.stop()
    _shared = None


@pytest.fixture
def directory(slapd_directory: Directory) -> Iterator[Directory]:
    """The session's slapd, running; afterwards running again and as it was before."""
    slapd_directory.reset()
    yield slapd_directory
    slapd_directory.reset()
