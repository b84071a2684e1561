"""Directory leavers: an account linked to the directory is checked against its entry at every
sign-in, whatever the method, and at every refresh-token grant (at most
IDP_LDAP_RECHECK_SECONDS old); `flask ldap sync` does the same for every such account. And the
admin group is one group, named by its DN. Against the real slapd (ldap_server.py), the
provider emulator (Google) and the provider served over HTTPS (oidc_rp.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from oidc_rp import App, Person, logout_receiver, register
from sqlalchemy import select
from test_ldap import UNAVAILABLE, ldap_settings
from test_social import dance, signed_in_as, social_settings

from conftest import PASSWORD, Browser, https_client, make_app
from identity.connectors.ldap import LdapConnector
from identity.connectors.ldap_connection import Settings
from identity.extensions import db
from identity.models import Event, User

DISABLED = "This account is disabled"
SCOPES = ["openid", "profile", "email", "groups", "offline_access"]


@pytest.fixture
def app_overrides(directory, emulator):
    return {**ldap_settings(directory), **social_settings(emulator)}


@pytest.fixture
def idp_settings(directory):
    return ldap_settings(directory)


# -- helpers ------------------------------------------------------------------------------


def age_directory_check(app, username: str, seconds: int = 301) -> None:
    """Time passes: the account's last reading of its entry is `seconds` older."""
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        for link in user.links:
            if link.connector == "ldap" and getattr(link, "checked_at", None):
                link.checked_at -= timedelta(seconds=seconds)
        db.session.commit()


def state(app, username: str) -> dict:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == username))
        return {
            "disabled": user.disabled,
            "groups": set(user.groups or []),
            "admin": user.is_administrator,
            "events": [
                (e.type, e.data.get("reason"))
                for e in db.session.scalars(
                    select(Event)
                    .order_by(Event.id)
                    .where(Event.user_id == user.id)
                    .order_by(Event.id)
                )
            ],
        }


def directory_person_with_password(app, browser: Browser, directory, uid: str = "ada") -> None:
    """`uid` signs in with the directory once (the account is created and linked), then an
    administrator gives the account a local password as well."""
    from identity.admin import accounts

    assert browser.login(uid, directory.passwords[uid]).status_code == 302
    browser.logout()
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == uid))
        accounts.set_password(user, PASSWORD, via="cli")


def directory_person_with_google(app, browser: Browser, directory, emulator) -> None:
    """ada signs in with the directory, connects Google from her account page, signs out."""
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    browser.post("/account/connect/google", token_from="/account")
    assert dance(browser, emulator, "google").headers["Location"] == "/account"
    browser.logout()
    assert dance(browser, emulator, "google").status_code == 302
    assert signed_in_as(browser) == "ada"
    browser.logout()


def delete_entry(directory, uid: str) -> None:
    with directory.admin() as conn:
        assert conn.delete(directory.dn(uid)), conn.result


def lock_entry(directory, uid: str) -> None:
    # As an OpenLDAP administrator locks an account (ppolicy): for ever, not by failed binds.
    directory.modify(directory.dn(uid), {"pwdAccountLockedTime": "000001010000Z"})


def lock_by_failed_binds(directory, uid: str) -> None:
    """ppolicy locks the entry as it does for anyone who guesses: three wrong binds, here
    straight at the directory (another app, or an attacker who can reach it), for 10 minutes."""
    from ldap3 import Connection, Server

    directory.modify(directory.policy_dn, {"pwdMaxFailure": "3", "pwdLockoutDuration": "600"})
    for _ in range(3):
        conn = Connection(Server(directory.url), directory.dn(uid), "not the password")
        assert not conn.bind()
        conn.unbind()
    with directory.admin() as conn:
        conn.search(directory.dn(uid), "(objectClass=*)", attributes=["pwdAccountLockedTime"])
        (value,) = conn.entries[0]["pwdAccountLockedTime"].values
    assert value != "000001010000Z"  # a time: locked for pwdLockoutDuration, not for ever


def unlock(directory, uid: str) -> None:
    """As when pwdLockoutDuration has passed, or an administrator unlocks the entry."""
    directory.modify(directory.dn(uid), {"pwdAccountLockedTime": None, "pwdFailureTime": None})


# -- every sign-in, whatever the method -----------------------------------------------------


def test_deleted_person_cannot_sign_in_with_a_local_password(app, browser, directory):
    directory_person_with_password(app, browser, directory)
    assert browser.login("ada", PASSWORD).status_code == 302  # still in the directory
    browser.logout()
    delete_entry(directory, "ada")
    age_directory_check(app, "ada")
    r = browser.login("ada", PASSWORD)
    assert r.status_code == 403 and DISABLED in r.get_data(as_text=True)
    assert browser.get("/account").status_code == 302  # not signed in
    after = state(app, "ada")
    assert after["disabled"]
    assert ("directory.account_disabled", "gone") in after["events"]


def test_locked_person_cannot_sign_in_with_google(app, browser, directory, emulator):
    directory_person_with_google(app, browser, directory, emulator)
    lock_entry(directory, "ada")
    age_directory_check(app, "ada")
    r = dance(browser, emulator, "google")
    assert r.status_code == 403 and DISABLED in r.get_data(as_text=True)
    assert signed_in_as(browser) is None
    after = state(app, "ada")
    assert after["disabled"]
    assert ("directory.account_disabled", "locked") in after["events"]


LOCKED_OUT = "Your directory account is locked"


def test_a_lockout_by_failed_binds_refuses_sign_in_and_disables_nothing(app, browser, directory):
    # Failed binds lock an entry for a while: refused while it lasts, but no leaver. Were the
    # account disabled here, anyone able to fail three binds could disable anyone, for good.
    directory_person_with_password(app, browser, directory)
    lock_by_failed_binds(directory, "ada")
    age_directory_check(app, "ada")
    for _ in range(2):  # the refusal is not remembered as a fresh reading of the entry
        r = browser.login("ada", PASSWORD)
        assert r.status_code == 403 and LOCKED_OUT in r.get_data(as_text=True)
    assert browser.get("/account").status_code == 302  # not signed in
    after = state(app, "ada")
    assert not after["disabled"]
    assert ("signin.failure", "locked_out") in after["events"]
    assert not [e for e in after["events"] if e[0] == "directory.account_disabled"]
    unlock(directory, "ada")
    assert browser.login("ada", PASSWORD).status_code == 302


def test_an_open_admin_session_loses_the_console_during_a_lockout(app, browser, directory):
    directory_person_with_password(app, browser, directory)
    assert browser.login("ada", PASSWORD).status_code == 302
    assert browser.get("/admin/users").status_code == 200
    lock_by_failed_binds(directory, "ada")
    age_directory_check(app, "ada")
    assert browser.get("/admin/users").status_code == 403
    assert not state(app, "ada")["disabled"]
    unlock(directory, "ada")
    assert browser.get("/admin/users").status_code == 200


def test_removed_from_the_admin_group_loses_the_console_at_the_next_local_sign_in(
    app, browser, directory
):
    directory_person_with_password(app, browser, directory)
    assert browser.login("ada", PASSWORD).status_code == 302
    assert browser.get("/admin/users").status_code == 200
    browser.logout()
    directory.modify(directory.group_dn("idp-admins"), {"member": directory.dn("grace")})
    age_directory_check(app, "ada")
    assert browser.login("ada", PASSWORD).status_code == 302
    assert browser.get("/admin/users").status_code == 403
    after = state(app, "ada")
    assert not after["admin"] and "idp-admins" not in after["groups"]
    assert not after["disabled"]


def test_an_open_admin_session_loses_the_console_once_the_window_has_passed(
    app, browser, directory
):
    directory_person_with_password(app, browser, directory)
    assert browser.login("ada", PASSWORD).status_code == 302
    assert browser.get("/admin/users").status_code == 200
    directory.modify(directory.group_dn("idp-admins"), {"member": directory.dn("grace")})
    assert browser.get("/admin/users").status_code == 200  # within the window: not asked
    age_directory_check(app, "ada")
    assert browser.get("/admin/users").status_code == 403  # no new sign-in needed
    assert browser.get("/account").status_code == 200  # still signed in, just not an admin


def test_an_open_admin_session_waits_while_the_directory_is_down(app, browser, directory):
    directory_person_with_password(app, browser, directory)
    assert browser.login("ada", PASSWORD).status_code == 302
    age_directory_check(app, "ada")
    directory.stop()
    r = browser.get("/admin/users")
    assert r.status_code == 503 and UNAVAILABLE in r.get_data(as_text=True)


def test_a_renamed_person_is_found_by_the_stable_id(app, browser, directory):
    directory_person_with_password(app, browser, directory)
    with directory.admin() as conn:
        assert conn.modify_dn(directory.dn("ada"), "uid=ada.lovelace"), conn.result
    age_directory_check(app, "ada")
    assert browser.login("ada", PASSWORD).status_code == 302
    assert not state(app, "ada")["disabled"]


def test_directory_down_refuses_a_linked_account_with_the_try_again_page(app, browser, directory):
    from identity.auth import accounts

    directory_person_with_password(app, browser, directory)
    with app.app_context():
        accounts.create_local("alice", "alice@example.org", PASSWORD)
    age_directory_check(app, "ada")
    directory.stop()
    r = browser.login("ada", PASSWORD)
    assert r.status_code == 503 and UNAVAILABLE in r.get_data(as_text=True)
    assert browser.get("/account").status_code == 302  # never let in on stale data
    assert not state(app, "ada")["disabled"]  # nor judged on no data
    # Accounts that have nothing to do with the directory still sign in.
    assert browser.login("alice", PASSWORD).status_code == 302


def test_directory_down_refuses_google_sign_in_of_a_linked_account(
    app, browser, directory, emulator
):
    directory_person_with_google(app, browser, directory, emulator)
    age_directory_check(app, "ada")
    directory.stop()
    r = dance(browser, emulator, "google")
    assert r.status_code == 503 and UNAVAILABLE in r.get_data(as_text=True)
    assert signed_in_as(browser) is None


def test_within_the_recheck_window_the_directory_is_not_asked(app, browser, directory, emulator):
    directory_person_with_google(app, browser, directory, emulator)
    age_directory_check(app, "ada", 0)
    before = directory.operations()
    assert dance(browser, emulator, "google").status_code == 302
    browser.logout()
    assert directory.operations() == before  # counted by slapd itself (cn=Monitor)
    age_directory_check(app, "ada", 301)
    assert dance(browser, emulator, "google").status_code == 302
    # Past the window: the entry and its groups are read (searches, counted by slapd).
    assert directory.operations() - before >= 2


# -- refresh-token grants --------------------------------------------------------------------


def _ada_in_an_app(idp, directory, **options):
    app = App(idp, register(idp, scopes=SCOPES, **options), scope=" ".join(SCOPES))
    person = Person(idp)
    page = person.open(app.authorization_url())
    page = person.sign_in(page, "ada", directory.passwords["ada"])
    if "Allow" in page.text:
        page = person.submit(page, {"decision": "allow"})
    return app, person, app.redeem(page)


def _refresh(app, token: dict):
    return app.post("/token", {"grant_type": "refresh_token", "refresh_token": token})


def test_refresh_of_a_deleted_person_is_refused_and_their_apps_are_told(idp, directory):
    from identity.oidc.logout import wait_for_deliveries

    with logout_receiver() as receiver:
        app, _, tokens = _ada_in_an_app(idp, directory, backchannel_logout_uri=receiver.url)
        sid = app.verify(tokens["id_token"]).claims["sid"]
        delete_entry(directory, "ada")
        age_directory_check(idp.app, "ada")
        r = _refresh(app, tokens["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        assert receiver.arrived.wait(10)
        wait_for_deliveries()
    (body,) = receiver.received
    assert app.verify(body["logout_token"]).claims["sid"] == sid
    assert app.post("/introspect", {"token": tokens["access_token"]}).json() == {"active": False}
    assert state(idp.app, "ada")["disabled"]


def test_refresh_carries_the_groups_the_directory_has_now(idp, directory):
    app, _, tokens = _ada_in_an_app(idp, directory)
    directory.modify(directory.group_dn("engineers"), {"member": directory.dn("grace")})
    age_directory_check(idp.app, "ada")
    r = _refresh(app, tokens["refresh_token"])
    assert r.status_code == 200, r.text
    info = app.session.get(
        f"{idp.url}/userinfo",
        headers={"Authorization": f"Bearer {r.json()['access_token']}"},
        verify=idp.ca,
    ).json()
    # engineers is gone, and "everyone" with it (ada was in it through engineers).
    assert set(info["groups"]) == {"staff", "idp-admins"}


def test_refresh_within_the_window_does_not_ask_the_directory(idp, directory):
    app, _, tokens = _ada_in_an_app(idp, directory)
    before = directory.operations()
    r = _refresh(app, tokens["refresh_token"])
    assert r.status_code == 200
    assert directory.operations() == before


def test_refresh_while_the_directory_is_down_is_refused_and_revokes_nothing(idp, directory):
    app, _, tokens = _ada_in_an_app(idp, directory)
    age_directory_check(idp.app, "ada")
    directory.stop()
    r = _refresh(app, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "directory is unavailable" in r.json()["error_description"]
    assert app.post("/introspect", {"token": tokens["access_token"]}).json()["active"]
    assert not state(idp.app, "ada")["disabled"]
    directory.start()
    # The same refresh token works once the directory answers: nothing was spent or revoked.
    again = _refresh(app, tokens["refresh_token"])
    assert again.status_code == 200, again.text


def test_refresh_during_a_lockout_is_refused_and_revokes_nothing(idp, directory):
    app, _, tokens = _ada_in_an_app(idp, directory)
    lock_by_failed_binds(directory, "ada")
    age_directory_check(idp.app, "ada")
    r = _refresh(app, tokens["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "locked" in r.json()["error_description"]
    assert app.post("/introspect", {"token": tokens["access_token"]}).json()["active"]
    assert not state(idp.app, "ada")["disabled"]
    unlock(directory, "ada")
    again = _refresh(app, tokens["refresh_token"])
    assert again.status_code == 200, again.text


def test_an_open_session_of_a_deleted_person_gets_no_code_for_another_app(idp, directory):
    first, person, _ = _ada_in_an_app(idp, directory)
    second = App(idp, register(idp, "second", skip_consent=True))
    assert "code" in second.callback_params(person.open(second.authorization_url()))
    delete_entry(directory, "ada")
    age_directory_check(idp.app, "ada")
    again = person.open(second.authorization_url())
    assert "/login" in again.final  # no code: the session is over
    assert state(idp.app, "ada")["disabled"]
    assert "/login" in person.open(first.authorization_url()).final


def test_an_open_session_while_the_directory_is_down_gets_temporarily_unavailable(idp, directory):
    app, person, _ = _ada_in_an_app(idp, directory)
    age_directory_check(idp.app, "ada")
    directory.stop()
    params = app.callback_params(person.open(app.authorization_url()))
    assert params["error"] == "temporarily_unavailable" and "code" not in params
    assert params["state"] == app.state
    directory.start()
    assert "code" in app.callback_params(person.open(app.authorization_url()))


# -- flask ldap sync ------------------------------------------------------------------------


def test_ldap_sync_disables_leavers_and_refreshes_groups(app, browser, directory):
    for uid in ("ada", "grace", "linus"):
        assert browser.login(uid, directory.passwords[uid]).status_code == 302
        browser.logout()
    directory.modify(directory.group_dn("engineers"), {"member": directory.dn("linus")})
    lock_entry(directory, "linus")
    delete_entry(directory, "grace")
    runner = app.test_cli_runner()
    r = runner.invoke(args=["ldap", "sync"])
    assert r.exit_code == 0, r.output
    assert "checked 3, updated 1, disabled 2, locked out 0, errors 0" in r.output
    assert state(app, "ada")["groups"] == {"staff", "idp-admins"}
    assert state(app, "grace")["disabled"] and state(app, "linus")["disabled"]
    # Disabled accounts are not walked again.
    r = runner.invoke(args=["ldap", "sync"])
    assert "checked 1, updated 0, disabled 0, locked out 0, errors 0" in r.output


def test_ldap_sync_changes_nothing_when_more_would_leave_than_allowed(app, browser, directory):
    for uid in ("ada", "grace", "linus"):
        assert browser.login(uid, directory.passwords[uid]).status_code == 302
        browser.logout()
    directory.modify(directory.group_dn("engineers"), {"member": directory.dn("linus")})
    lock_entry(directory, "linus")
    delete_entry(directory, "grace")
    runner = app.test_cli_runner()
    r = runner.invoke(args=["ldap", "sync", "--max-disable", "1"])
    assert r.exit_code == 1
    assert "2 accounts would be disabled, more than --max-disable 1" in r.output
    assert "run again with --max-disable 2 (nothing was changed)" in r.output
    for uid in ("grace", "linus"):
        assert not state(app, uid)["disabled"]
    assert "engineers" in state(app, "ada")["groups"]  # not even the groups
    r = runner.invoke(args=["ldap", "sync", "--max-disable", "2"])
    assert r.exit_code == 0, r.output
    assert "checked 3, updated 1, disabled 2, locked out 0, errors 0" in r.output


def test_ldap_sync_refuses_a_negative_max_disable(app):
    r = app.test_cli_runner().invoke(args=["ldap", "sync", "--max-disable", "-1"])
    assert r.exit_code == 2 and "Invalid value for '--max-disable'" in r.output


def test_ldap_sync_counts_a_lockout_and_disables_nobody(app, browser, directory):
    for uid in ("ada", "grace"):
        assert browser.login(uid, directory.passwords[uid]).status_code == 302
        browser.logout()
    lock_by_failed_binds(directory, "grace")
    r = app.test_cli_runner().invoke(args=["ldap", "sync"])
    assert r.exit_code == 0, r.output
    assert "checked 2, updated 0, disabled 0, locked out 1, errors 0" in r.output
    assert not state(app, "grace")["disabled"]


def test_ldap_sync_fails_when_the_directory_is_unreachable(app, browser, directory):
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    directory.stop()
    r = app.test_cli_runner().invoke(args=["ldap", "sync"])
    assert r.exit_code == 1
    assert "checked 0, updated 0, disabled 0, locked out 0, errors 1" in r.output
    assert "the directory did not answer" in r.output and "(nothing was changed)" in r.output
    assert not state(app, "ada")["disabled"]


# -- Active Directory, at the seam where a looked-up entry is judged ------------------------


@pytest.mark.parametrize("uac,verdict", [("514", "locked"), ("512", "present")])
def test_active_directory_account_disabled_bit_is_a_lock(monkeypatch, uac, verdict):
    import uuid

    guid = uuid.UUID("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
    conn = LdapConnector(
        Settings(
            urls=("ldap://127.0.0.1:1",),
            user_base="OU=People,DC=corp",
            id_attribute="objectGUID",
            username_attribute="sAMAccountName",
        )
    )
    asked = []

    def search(base, flt, attributes, scope=None, **kw):
        asked.append(flt)
        return [
            {
                "dn": "CN=Bob,OU=People,DC=corp",
                "attributes": {
                    "objectGUID": [guid.bytes_le],
                    "sAMAccountName": [b"bob"],
                    "userAccountControl": [uac.encode()],
                },
            }
        ]

    monkeypatch.setattr(conn, "_search", search)
    assert conn.lookup(str(guid)).state == verdict
    # The GUID is looked up as its bytes, each escaped: never the text form, never raw.
    assert asked[0] == "(objectGUID=" + "".join(f"\\{b:02x}" for b in guid.bytes_le) + ")"


# -- the admin group is a DN ---------------------------------------------------------------


@pytest.mark.parametrize("group_base", ["dc=example,dc=org", None], ids=["search", "memberOf"])
def test_a_same_named_group_elsewhere_does_not_make_admins(
    database_url, tmp_path, directory, group_base
):
    # A group called idp-admins that anyone who can create groups in ou=services could make.
    impostor = f"cn=idp-admins,ou=services,{directory.base_dn}"
    with directory.admin() as conn:
        assert conn.add(
            impostor, ["top", "groupOfNames"], {"cn": "idp-admins", "member": directory.dn("grace")}
        ), conn.result
    app = make_app(database_url, tmp_path, **ldap_settings(directory, LDAP_GROUP_BASE=group_base))
    with app.app_context():
        db.create_all()
    browser = Browser(https_client(app))
    try:
        assert browser.login("grace", directory.passwords["grace"]).status_code == 302
        assert "idp-admins" in state(app, "grace")["groups"]  # the name is there...
        assert browser.get("/admin/users").status_code == 403  # ...and makes no admin
        browser.logout()
        assert browser.login("ada", directory.passwords["ada"]).status_code == 302
        assert browser.get("/admin/users").status_code == 200  # the real group does
    finally:
        _dispose(app)


def test_the_admin_group_dn_in_another_case_and_spacing_still_matches(
    database_url, tmp_path, directory
):
    written = "CN=IdP-Admins, OU=Groups,  DC=Example , DC=ORG"
    app = make_app(database_url, tmp_path, **ldap_settings(directory, LDAP_ADMIN_GROUP=written))
    with app.app_context():
        db.create_all()
    browser = Browser(https_client(app))
    try:
        assert browser.login("ada", directory.passwords["ada"]).status_code == 302
        assert browser.get("/admin/users").status_code == 200
        assert state(app, "ada")["admin"]
    finally:
        _dispose(app)


def test_removing_the_local_role_says_the_directory_group_keeps_it(app, browser, directory):
    from identity.auth import accounts

    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    browser.logout()
    with app.app_context():
        accounts.create_local("alice", "alice@example.org", PASSWORD, admin=True)
        ada = db.session.scalar(select(User).where(User.username == "ada"))
        ada.is_admin = True
        db.session.commit()
        ada_id = ada.id
    assert browser.login("alice", PASSWORD).status_code == 302
    page = browser.get(f"/admin/users/{ada_id}/admin").get_data(as_text=True)
    assert (
        "They remain an administrator through the directory group "
        f"{directory.group_dn('idp-admins')}" in page
    )


def _dispose(app) -> None:
    from conftest import dispose

    dispose(app)


# -- a session restored from a remember-me cookie ---------------------------------------------


def remembered_directory_person(app, browser: Browser, directory) -> None:
    """ada signs in with the directory and "keep me signed in"; then her browser restarts
    (the session cookie is gone, the remember-me cookie stays)."""
    r = browser.login("ada", directory.passwords["ada"], remember="y")
    assert r.status_code == 302
    browser.client.delete_cookie("__Host-session")


def test_a_remember_me_cookie_does_not_bring_a_deleted_person_back(app, browser, directory):
    remembered_directory_person(app, browser, directory)
    delete_entry(directory, "ada")
    age_directory_check(app, "ada")
    assert browser.get("/account").status_code == 302  # not restored: to the login page
    after = state(app, "ada")
    assert after["disabled"]
    assert ("directory.account_disabled", "gone") in after["events"]
    assert ("signin.restored", None) not in after["events"]


def test_a_remember_me_cookie_restores_nobody_while_the_directory_is_down(app, browser, directory):
    remembered_directory_person(app, browser, directory)
    age_directory_check(app, "ada")
    directory.stop()
    assert browser.get("/account").status_code == 302  # never let in on stale data
    assert not state(app, "ada")["disabled"]  # nor judged on no data
    directory.start()
    # The device is still remembered: once the directory answers, the cookie works.
    assert browser.get("/account").status_code == 200
