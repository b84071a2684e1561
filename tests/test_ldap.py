"""Sign-in with the company directory, against a real OpenLDAP (see ldap_server.py)."""

from __future__ import annotations

import pytest
from ldap_server import OBRIEN, blackhole, dead_url
from sqlalchemy import select

from conftest import PASSWORD, Browser, https_client, make_app
from identity.connectors import ConnectorError
from identity.connectors.base import AccountProblem
from identity.connectors.ldap import LdapConnector
from identity.connectors.ldap_connection import Settings
from identity.extensions import db
from identity.models import Event, LinkedIdentity, User

UNAVAILABLE = "The company directory is unavailable"
WRONG = "Wrong username or password."


def ldap_settings(d, **overrides) -> dict:
    settings = {
        "LDAP_URL": [d.url],
        "LDAP_START_TLS": True,
        "LDAP_CA_FILE": d.ca_file,
        "LDAP_BIND_DN": d.bind_dn,
        "LDAP_BIND_PASSWORD": d.bind_password,
        "LDAP_USER_BASE": d.people_dn,
        "LDAP_GROUP_BASE": d.groups_dn,
        "LDAP_ADMIN_GROUP": d.group_dn("idp-admins"),
        "LDAP_CONNECT_TIMEOUT": 2,
        "LDAP_READ_TIMEOUT": 2,
    }
    settings.update(overrides)
    return settings


@pytest.fixture
def app_overrides(directory):
    return ldap_settings(directory)


@pytest.fixture
def connector(app):
    ldap = app.extensions["idp.connectors"].get("ldap")
    return ldap


def account(app, username):
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        if user is None:
            return None
        return {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "groups": user.groups,
            "password_hash": user.password_hash,
            "admin": user.is_administrator,
            "links": [(link.connector, link.subject) for link in user.links],
        }


def test_directory_is_tried_before_local_accounts(app):
    assert [c.id for c in app.extensions["idp.connectors"].password()] == ["ldap", "local"]


def test_search_then_bind_creates_a_linked_account_with_groups(app, browser, directory):
    r = browser.login("ada", directory.passwords["ada"])
    # An admin through the directory group idp-admins: the console is her landing page.
    assert r.status_code == 302 and r.headers["Location"] == "/admin/"
    ada = account(app, "ada")
    assert ada["links"] == [("ldap", directory.entry_uuid("ada"))]  # the stable id, not the DN
    assert ada["password_hash"] is None
    assert ada["email"] == "ada@example.org" and ada["name"] == "Ada Lovelace"
    # groupOfNames, groupOfUniqueNames, and "everyone" through the nested "engineers".
    assert set(ada["groups"]) == {"engineers", "staff", "idp-admins", "everyone"}
    assert ada["admin"] is True
    page = browser.get("/account").get_data(as_text=True)
    assert "Company directory" in page and "Change password" not in page


def test_posix_group_by_member_uid(app, browser, directory):
    browser.login("grace", directory.passwords["grace"])
    assert set(account(app, "grace")["groups"]) == {"staff", "ops"}
    assert account(app, "grace")["admin"] is False


def test_second_sign_in_refreshes_name_email_and_groups(app, browser, directory):
    browser.login("ada", directory.passwords["ada"])
    first = account(app, "ada")
    directory.modify(
        directory.dn("ada"), {"mail": "countess@example.org", "displayName": "Augusta Ada King"}
    )
    directory.modify(directory.group_dn("idp-admins"), {"member": directory.dn("grace")})
    browser.logout()
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    again = account(app, "ada")
    assert again["id"] == first["id"]
    assert again["email"] == "countess@example.org" and again["name"] == "Augusta Ada King"
    assert "idp-admins" not in again["groups"] and again["admin"] is False


def test_direct_bind_from_dn_template_without_service_account(database_url, tmp_path, directory):
    app = make_app(
        database_url,
        tmp_path,
        **ldap_settings(
            directory,
            LDAP_BIND_DN=None,
            LDAP_BIND_PASSWORD=None,
            # Anonymous binds read entries in the test directory (the re-check needs that).
            LDAP_ANONYMOUS_SEARCH=True,
            LDAP_USER_BASE=None,
            LDAP_GROUP_BASE=None,
            LDAP_USER_DN_TEMPLATE="uid={username},ou=people,dc=example,dc=org",
        ),
    )
    with app.app_context():
        db.create_all()
    b = Browser(https_client(app))
    try:
        assert b.login("ada", directory.passwords["ada"]).status_code == 302
        ada = account(app, "ada")
        assert ada["links"] == [("ldap", directory.entry_uuid("ada"))]
        assert {"engineers", "idp-admins"} <= set(ada["groups"])  # from memberOf
        b.logout()
        assert b.login("ada", "not her password").status_code == 401
        assert b.login(OBRIEN, directory.passwords[OBRIEN]).status_code == 302
    finally:
        app.extensions["idp.connectors"].get("ldap").close()
        with app.app_context():
            for table in reversed(db.metadata.sorted_tables):
                db.session.execute(table.delete())
            db.session.commit()
            db.session.remove()
            db.engine.dispose()


def test_special_characters_in_the_name(app, browser, directory):
    r = browser.login(OBRIEN, directory.passwords[OBRIEN])
    assert r.status_code == 302
    obrien = account(app, "o-brien-jr.-ops")
    assert obrien["links"] == [("ldap", directory.entry_uuid(OBRIEN))]


@pytest.mark.parametrize(
    "username", ["*", "*)(uid=*", "admin)(|(uid=*", "ada)(|(uid=*", "ad*", "(uid=ada)", "ada\\2a"]
)
def test_injection_attempts_never_sign_in(app, browser, directory, username):
    r = browser.login(username, directory.passwords["ada"])
    assert r.status_code == 401 and WRONG in r.get_data(as_text=True)
    assert account(app, "ada") is None


def test_nul_and_overlong_input_is_refused_before_the_directory(connector, app, monkeypatch):
    monkeypatch.setattr(LdapConnector, "_check_password", lambda *a, **k: pytest.fail("bound"))
    with app.app_context():
        assert connector.authenticate("ada\x00", "whatever") is None
        assert connector.authenticate("a" * 300, "whatever") is None


def test_empty_password_is_refused_before_any_bind(connector, app, directory, monkeypatch):
    monkeypatch.setattr(LdapConnector, "_check_password", lambda *a, **k: pytest.fail("bound"))
    with app.app_context():
        assert connector.authenticate("ada", "") is None


def test_empty_password_bind_would_have_succeeded_anonymously(directory):
    """Why the rule exists: the server accepts a simple bind with a DN and no password as
    an unauthenticated (anonymous) bind, RFC 4513 5.1.2; a client that trusts the bind
    result would let anyone in as anyone."""
    import subprocess

    r = subprocess.run(
        ["ldapwhoami", "-x", "-H", directory.url, "-D", directory.dn("ada"), "-w", ""],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "anonymous"


def test_wrong_overlong_and_unknown_get_the_generic_answer(app, browser, directory):
    for username, password in [
        ("ada", "wrong password"),
        ("ada", "x" * 1024),
        ("nobody", "whatever password"),
        ("linus", ""),
    ]:
        r = browser.login(username, password)
        assert r.status_code in (400, 401)
        if r.status_code == 401:
            assert WRONG in r.get_data(as_text=True)
    assert account(app, "ada") is None


def test_utf8_password(app, browser, directory):
    assert browser.login("linus", directory.passwords["linus"]).status_code == 302
    assert account(app, "linus")["email"] is None  # linus has no mail attribute


def test_locked_account_cannot_sign_in(app, browser, directory):
    r = browser.login("locked", directory.passwords["locked"])
    assert r.status_code == 401 and WRONG in r.get_data(as_text=True)
    assert account(app, "locked") is None


@pytest.mark.parametrize(
    "uid,message,reason",
    [
        ("expired", "Your directory password has expired.", "password_expired"),
        ("mustchange", "must be changed before you can sign in", "password_must_change"),
    ],
)
def test_expired_and_must_change_passwords_say_so(app, browser, directory, uid, message, reason):
    r = browser.login(uid, directory.passwords[uid])
    assert r.status_code == 403 and message in r.get_data(as_text=True)
    assert account(app, uid) is None
    with app.app_context():
        reasons = [
            e.data.get("reason") for e in db.session.scalars(select(Event).order_by(Event.id))
        ]
    assert reason in reasons


def test_ldaps_with_the_right_ca(database_url, tmp_path, directory):
    settings = Settings.from_config(
        {**ldap_settings(directory, LDAP_URL=[directory.ldaps_url], LDAP_START_TLS=False)}
    )
    conn = LdapConnector(settings)
    try:
        assert conn.authenticate("grace", directory.passwords["grace"]).username == "grace"
    finally:
        conn.close()


@pytest.mark.parametrize("tls", ["starttls", "ldaps"])
def test_wrong_ca_is_a_clear_failure_not_a_wrong_password(directory, tls):
    url = directory.url if tls == "starttls" else directory.ldaps_url
    conn = LdapConnector(
        Settings.from_config(
            ldap_settings(
                directory,
                LDAP_URL=[url],
                LDAP_START_TLS=tls == "starttls",
                LDAP_CA_FILE=directory.wrong_ca_file,
            )
        )
    )
    try:
        with pytest.raises(ConnectorError, match="(?i)certificate"):
            conn.authenticate("grace", directory.passwords["grace"])
    finally:
        conn.close()


def test_failover_past_a_dead_and_a_silent_server(directory):
    with blackhole() as silent:
        conn = LdapConnector(
            Settings.from_config(
                ldap_settings(
                    directory,
                    LDAP_URL=[dead_url(), silent, directory.url],
                    LDAP_CONNECT_TIMEOUT=1,
                    LDAP_READ_TIMEOUT=1,
                )
            )
        )
        try:
            assert conn.authenticate("ada", directory.passwords["ada"]).username == "ada"
        finally:
            conn.close()


def test_directory_down_mid_run(app, browser, user, directory, caplog):
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302  # pools warm
    browser.logout()
    directory.stop()
    r = browser.login("ada", directory.passwords["ada"])
    assert r.status_code == 503
    body = r.get_data(as_text=True)
    assert UNAVAILABLE in body and WRONG not in body
    assert "connector ldap failed" in caplog.text  # the detail is in the log
    # Local accounts still sign in while the directory is down.
    assert browser.login("alice", PASSWORD).status_code == 302
    browser.logout()
    directory.start()
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302


def test_same_username_locally_and_in_the_directory_stay_apart(app, browser, directory):
    from identity.auth import accounts

    with app.app_context():
        accounts.create_local("ada", "ada.local@example.org", PASSWORD)
    # The name is the local account's: its own password only, never a bind for the
    # directory's ada (tests/test_password_order.py)...
    r = browser.login("ada", directory.passwords["ada"])
    assert r.status_code == 401 and WRONG in r.get_data(as_text=True)
    assert browser.login("ada", PASSWORD).status_code == 302
    browser.logout()
    # ...until an administrator renames one of them.
    with app.app_context():
        accounts.find("ada").username = "ada-local"
        db.session.commit()
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    browser.logout()
    assert browser.login("ada-local", PASSWORD).status_code == 302
    with app.app_context():
        links = db.session.scalars(select(LinkedIdentity).order_by(LinkedIdentity.id)).all()
        assert sorted(link.connector for link in links) == ["ldap", "local"]
        assert len({link.user_id for link in links}) == 2  # two accounts, never joined


def test_account_problem_is_not_a_connector_error():
    assert not issubclass(AccountProblem, ConnectorError)


# -- Active Directory answers, at the seam where entries and results are interpreted -------

AD_ERROR = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data "


@pytest.mark.parametrize(
    "message,reason",
    [
        (
            AD_ERROR + "52e, v4563",
            "bad_credentials",
        ),
        (
            AD_ERROR + "775, v4563",
            "locked",
        ),
        (
            AD_ERROR + "533, v4563",
            "disabled",
        ),
        (
            AD_ERROR + "532, v4563",
            "password_expired",
        ),
        (
            AD_ERROR + "773, v4563",
            "password_must_change",
        ),
        ("invalid credentials", None),
    ],
)
def test_active_directory_bind_reasons(message, reason):
    from identity.admin.ldap_tester import hint_of
    from identity.connectors.ldap_answers import ad_reason

    found = ad_reason(message)
    assert (found[0] if found else None) == reason
    hint = hint_of({"result": 49, "message": message})
    assert hint.startswith("Active Directory says") if reason else "wrong DN or password" in hint


def test_object_guid_and_disabled_user_account_control():
    import uuid as _uuid

    from identity.connectors.ldap_entries import stable_id

    guid = _uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    assert stable_id({"objectGUID": [guid.bytes_le]}, "objectGUID") == str(guid)
    assert stable_id({"entryUUID": [b"abc-123"]}, "entryUUID") == "abc-123"
    conn = LdapConnector(
        Settings(
            urls=("ldap://127.0.0.1:1",),
            group_base=None,
            id_attribute="objectGUID",
            username_attribute="sAMAccountName",
        )
    )
    entry = {
        "dn": "CN=Bob,OU=People,DC=corp",
        "attributes": {
            "objectGUID": [guid.bytes_le],
            "sAMAccountName": [b"bob"],
            "memberOf": [b"CN=Domain Users,CN=Users,DC=corp"],
            "userAccountControl": [b"514"],
        },
    }
    assert conn._identity(entry) is None  # 514 = NORMAL_ACCOUNT | ACCOUNTDISABLE
    entry["attributes"]["userAccountControl"] = [b"512"]
    ident = conn._identity(entry)
    assert ident.subject == str(guid) and ident.username == "bob"
    assert ident.groups == ("Domain Users",)


def test_several_matching_entries_are_refused(app, connector, directory):
    """A filter that matches more than one entry signs no one in."""
    connector.s = Settings.from_config(
        {**ldap_settings(directory), "LDAP_USER_FILTER": "(|(uid={username})(uid=grace))"}
    )
    with app.app_context():
        assert connector.authenticate("ada", directory.passwords["ada"]) is None
