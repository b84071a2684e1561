"""The test LDAP server itself (tests/ldap_server.py), checked with plain ldap3: what the
connector tests rely on is really there (TLS, ppolicy states, memberOf, stop/start)."""

from __future__ import annotations

import re
import ssl
import time

import ldap_server
import pytest
from ldap3 import BASE, NONE, SUBTREE, Connection, Server
from ldap3.core.exceptions import LDAPException, LDAPSocketOpenError
from ldap3.utils.conv import escape_filter_chars
from ldap_server import OBRIEN, Directory, SlapdError, blackhole, dead_url, unbind_and_close

from identity.connectors.ldap_tls import CheckedTls

pytest_plugins = ["ldap_server"]  # the fixtures slapd_directory and directory

PPOLICY = "1.3.6.1.4.1.42.2.27.8.5.1"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def connection(url: str, dn: str | None = None, password: str | None = None, *, tls=None, **kw):
    server = Server(url, get_info=NONE, connect_timeout=kw.pop("connect_timeout", 5), tls=tls)
    return Connection(server, dn, password, raise_exceptions=False, **kw)


def bind(url: str, dn: str, password: str, controls=None) -> dict:
    """Bind once and close; the bind result (with response controls)."""
    conn = connection(url, dn, password, receive_timeout=5)
    try:
        conn.bind(controls=controls)
        return dict(conn.result)
    finally:
        unbind_and_close(conn)


def ppolicy_value(result: dict) -> bytes | None:
    return ((result.get("controls") or {}).get(PPOLICY) or {}).get("value")


def test_service_account_searches_people(directory: Directory):
    conn = connection(directory.url, directory.bind_dn, directory.bind_password)
    try:
        assert conn.bind(), conn.result
        assert conn.search(
            directory.people_dn,
            "(objectClass=inetOrgPerson)",
            SUBTREE,
            attributes=["uid", "mail", "cn", "displayName", "userPassword"],
        )
        found = {e["attributes"]["uid"][0]: e["raw_attributes"] for e in conn.response}
    finally:
        unbind_and_close(conn)
    assert set(found) == set(directory.passwords)
    assert found["ada"]["mail"] == [b"ada@example.org"]
    assert found["ada"]["displayName"] == [b"Ada Lovelace"]
    assert found["grace"]["mail"] == [b"grace@example.org"]
    assert not found["linus"]["mail"]
    assert found[OBRIEN]["cn"] == [OBRIEN.encode()]
    # userPassword: auth only, never readable by the service account.
    assert not any(raw["userPassword"] for raw in found.values())


def test_anonymous_may_search_but_not_read_passwords(directory: Directory):
    """The server allows anonymous search, so refusing it is the connector's own policy."""
    conn = connection(directory.url)
    try:
        assert conn.bind()
        assert conn.search(directory.people_dn, "(uid=ada)", attributes=["mail", "userPassword"])
        assert conn.entries[0].mail.value == "ada@example.org"
        assert not conn.response[0]["raw_attributes"]["userPassword"]
    finally:
        unbind_and_close(conn)


def test_ada_binds_with_her_password_only(directory: Directory):
    assert bind(directory.url, directory.dn("ada"), directory.passwords["ada"])["result"] == 0
    wrong = bind(directory.url, directory.dn("ada"), directory.passwords["grace"])
    assert wrong["description"] == "invalidCredentials"


def test_passwords_are_distinct_and_long(directory: Directory):
    values = list(directory.passwords.values())
    assert len(set(values)) == len(values) and all(len(p) >= 12 for p in values)
    assert not directory.passwords["linus"].isascii()  # UTF-8 on the wire
    for uid, password in directory.passwords.items():
        if uid not in ("locked", "expired"):
            assert bind(directory.url, directory.dn(uid), password)["result"] == 0, uid


def test_obrien_binds_via_escaped_dn_and_is_found_by_filter(directory: Directory):
    dn = directory.dn(OBRIEN)
    assert dn == "uid=O'Brien\\, Jr. (ops)*,ou=people,dc=example,dc=org"
    assert bind(directory.url, dn, directory.passwords[OBRIEN])["result"] == 0
    conn = connection(directory.url, directory.bind_dn, directory.bind_password)
    try:
        assert conn.bind()
        assert conn.search(directory.people_dn, f"(uid={escape_filter_chars(OBRIEN)})")
        assert len(conn.entries) == 1
        # The server hands the DN back with the comma hex-escaped: compare DNs normalised.
        assert conn.entries[0].entry_dn == "uid=O'Brien\\2C Jr. (ops)*,ou=people,dc=example,dc=org"
    finally:
        unbind_and_close(conn)


def test_locked_account_cannot_bind_with_right_password(directory: Directory):
    result = bind(directory.url, directory.dn("locked"), directory.passwords["locked"])
    assert result["description"] == "invalidCredentials"
    with_control = bind(
        directory.url,
        directory.dn("locked"),
        directory.passwords["locked"],
        controls=[(PPOLICY, False, None)],
    )
    assert with_control["description"] == "invalidCredentials"
    assert ppolicy_value(with_control) == b"\x30\x03\x81\x01\x01"  # error: accountLocked


def test_expired_password_cannot_bind(directory: Directory):
    result = bind(
        directory.url,
        directory.dn("expired"),
        directory.passwords["expired"],
        controls=[(PPOLICY, False, None)],
    )
    assert result["description"] == "invalidCredentials"
    assert ppolicy_value(result) == b"\x30\x03\x81\x01\x00"  # error: passwordExpired


def test_mustchange_binds_but_may_only_change_its_password(directory: Directory):
    conn = connection(directory.url, directory.dn("mustchange"), directory.passwords["mustchange"])
    try:
        assert conn.bind(controls=[(PPOLICY, False, None)]), conn.result
        assert ppolicy_value(conn.result) == b"\x30\x03\x81\x01\x02"  # changeAfterReset
        assert not conn.search(directory.people_dn, "(uid=ada)")
        assert conn.result["description"] == "insufficientAccessRights"
    finally:
        unbind_and_close(conn)
    # Without the control the bind simply succeeds: only the control tells.
    plain = bind(directory.url, directory.dn("mustchange"), directory.passwords["mustchange"])
    assert plain["result"] == 0 and ppolicy_value(plain) is None


def test_starttls_with_the_right_ca(directory: Directory):
    tls = CheckedTls(validate=ssl.CERT_REQUIRED, ca_certs_file=directory.ca_file)
    conn = connection(directory.url, directory.bind_dn, directory.bind_password, tls=tls)
    try:
        conn.open()
        assert conn.start_tls(), conn.result
        assert conn.bind(), conn.result
        assert conn.extend.standard.who_am_i() == f"dn:{directory.bind_dn}"
    finally:
        unbind_and_close(conn)


def test_starttls_with_the_wrong_ca_fails(directory: Directory):
    tls = CheckedTls(validate=ssl.CERT_REQUIRED, ca_certs_file=directory.wrong_ca_file)
    conn = connection(directory.url, directory.bind_dn, directory.bind_password, tls=tls)
    try:
        conn.open()
        with pytest.raises(LDAPException, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            conn.start_tls()
    finally:
        unbind_and_close(conn)


@pytest.mark.parametrize("localhost", ["127.0.0.1", "localhost"])
def test_ldaps_with_the_right_ca(directory: Directory, localhost: str):
    tls = CheckedTls(validate=ssl.CERT_REQUIRED, ca_certs_file=directory.ca_file)
    url = directory.ldaps_url.replace("127.0.0.1", localhost)
    conn = connection(url, directory.bind_dn, directory.bind_password, tls=tls)
    try:
        assert conn.bind(), conn.result
        assert conn.extend.standard.who_am_i() == f"dn:{directory.bind_dn}"
    finally:
        unbind_and_close(conn)


def test_ldaps_with_the_wrong_ca_fails(directory: Directory):
    tls = CheckedTls(validate=ssl.CERT_REQUIRED, ca_certs_file=directory.wrong_ca_file)
    conn = connection(directory.ldaps_url, directory.bind_dn, directory.bind_password, tls=tls)
    try:
        with pytest.raises(LDAPSocketOpenError, match="CERTIFICATE_VERIFY_FAILED"):
            conn.open()
    finally:
        unbind_and_close(conn)


def _member_of(directory: Directory, dn: str) -> set[str]:
    conn = connection(directory.url, directory.bind_dn, directory.bind_password)
    try:
        assert conn.bind()
        assert conn.search(dn, "(objectClass=*)", BASE, attributes=["memberOf"])
        return {v.lower() for v in conn.entries[0].entry_attributes_as_dict.get("memberOf", [])}
    finally:
        unbind_and_close(conn)


def test_memberof_overlay(directory: Directory):
    g = directory.group_dn
    assert _member_of(directory, directory.dn("ada")) == {
        g("engineers"),
        g("idp-admins"),
        g("staff"),  # groupOfUniqueNames has its own memberof instance
    }
    assert _member_of(directory, directory.dn("grace")) == {g("staff")}  # posixGroup: none
    assert _member_of(directory, directory.dn("linus")) == {g("everyone")}
    # Nesting is not resolved for people: the engineers group itself is in everyone.
    assert _member_of(directory, g("engineers")) == {g("everyone")}


def test_entry_uuid(directory: Directory):
    uuids = {uid: directory.entry_uuid(uid) for uid in directory.passwords}
    assert all(UUID_RE.match(u) for u in uuids.values())
    assert len(set(uuids.values())) == len(uuids)


def test_stop_makes_connections_fail_and_start_brings_it_back(directory: Directory):
    directory.stop()
    directory.stop()  # idempotent
    with pytest.raises(LDAPSocketOpenError):
        bind(directory.url, directory.dn("ada"), directory.passwords["ada"])
    started = time.monotonic()
    directory.start()
    assert time.monotonic() - started < 5
    assert bind(directory.url, directory.dn("ada"), directory.passwords["ada"])["result"] == 0


def test_a_test_may_leave_it_stopped(directory: Directory):
    directory.stop()


def test_and_the_next_test_finds_it_running(directory: Directory):
    assert directory.running
    assert bind(directory.url, directory.bind_dn, directory.bind_password)["result"] == 0


def test_a_test_may_change_entries(directory: Directory):
    directory.modify(directory.dn("ada"), {"mail": "changed@example.org", "displayName": None})
    directory.modify(directory.dn("grace"), {"pwdChangedTime": "20000101000000Z"})
    directory.modify(directory.group_dn("engineers"), {"member": [directory.dn("grace")]})
    assert _member_of(directory, directory.dn("grace")) == {
        directory.group_dn("staff"),
        directory.group_dn("engineers"),
    }
    with directory.admin() as conn:
        conn.search(directory.dn("ada"), "(objectClass=*)", BASE, attributes=["*"])
        assert conn.entries[0].mail.value == "changed@example.org"
        assert not conn.response[0]["raw_attributes"].get("displayName")


def test_and_the_next_test_finds_them_restored(directory: Directory):
    with directory.admin() as conn:
        conn.search(directory.dn("ada"), "(objectClass=*)", BASE, attributes=["*"])
        assert conn.entries[0].mail.value == "ada@example.org"
        assert conn.entries[0].displayName.value == "Ada Lovelace"
    assert bind(directory.url, directory.dn("grace"), directory.passwords["grace"])["result"] == 0
    assert _member_of(directory, directory.dn("grace")) == {directory.group_dn("staff")}
    assert directory.group_dn("engineers") in _member_of(directory, directory.dn("ada"))


def test_reset_undoes_what_the_server_itself_wrote(directory: Directory):
    """Failed binds under a lockout policy write pwdFailureTime and lock the account."""
    directory.modify(directory.policy_dn, {"pwdMaxFailure": "2"})
    for _ in range(2):
        bind(directory.url, directory.dn("ada"), "not her password")
    locked = bind(directory.url, directory.dn("ada"), directory.passwords["ada"])
    assert locked["description"] == "invalidCredentials"
    restores = directory.restores
    directory.reset()
    assert directory.restores == restores + 1
    assert bind(directory.url, directory.dn("ada"), directory.passwords["ada"])["result"] == 0


def test_admin_password_change_sets_pwdreset_unless_cleared(directory: Directory):
    """pwdMustChange: a password set by the rootdn must be changed, unless pwdReset is
    removed in the same modify."""
    directory.modify(directory.dn("ada"), {"userPassword": "set-by-admin-once"})
    with directory.admin() as conn:
        conn.search(directory.dn("ada"), "(objectClass=*)", BASE, attributes=["pwdReset"])
        assert conn.entries[0].pwdReset.value == "TRUE"
    directory.modify(
        directory.dn("grace"), {"userPassword": "set-by-admin-twice", "pwdReset": None}
    )
    with directory.admin() as conn:
        conn.search(directory.dn("grace"), "(objectClass=*)", BASE, attributes=["pwdReset"])
        assert not conn.response[0]["raw_attributes"]["pwdReset"]
    assert bind(directory.url, directory.dn("grace"), "set-by-admin-twice")["result"] == 0


def test_blackhole_times_out():
    with blackhole() as url:
        conn = connection(url, "cn=x", "y", receive_timeout=1, connect_timeout=1)
        started = time.monotonic()
        try:
            with pytest.raises(LDAPException):
                conn.bind()
        finally:
            unbind_and_close(conn)
        assert 0.9 < time.monotonic() - started < 5


def test_dead_url_refuses():
    url = dead_url()
    assert re.fullmatch(r"ldap://127\.0\.0\.1:\d+", url)
    conn = connection(url, "cn=x", "y", connect_timeout=1)
    try:
        with pytest.raises(LDAPSocketOpenError):
            conn.bind()
    finally:
        unbind_and_close(conn)


def test_missing_slapd_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(ldap_server, "SLAPD_SEARCH_PATH", str(tmp_path))
    with pytest.raises(SlapdError, match="slapd not found.*apt-get install"):
        ldap_server.launch(tmp_path / "slapd")
