"""Which check a password typed into the login form gets: the account the typed name names
decides. A directory-linked account is checked by its own directory entry (and by its local
password first, when an administrator gave it one); a local account by its local password
only, never by a bind; only a name no account has here goes to the directory. Against the
real slapd (ldap_server.py) with OpenLDAP's ppolicy locking entries after failed binds."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from ldap3 import Connection, Server
from test_directory_leavers import directory_person_with_password
from test_ldap import UNAVAILABLE, WRONG, ldap_settings
from test_social import signed_in_as

from conftest import PASSWORD, Browser
from identity.admin.accounts import IN_DIRECTORY
from identity.auth import accounts
from identity.auth.password_check import DIRECTORY_UNCHECKED
from identity.connectors.ldap import LdapConnector
from identity.connectors.ldap_connection import Settings
from identity.extensions import db
from identity.models import User

LOCAL_ONLY = "a local password of its own 4417"


@pytest.fixture
def app_overrides(directory):
    return ldap_settings(directory)


@pytest.fixture
def ppolicy_lockout(directory):
    """The directory locks an entry after 3 wrong passwords, for 10 minutes (the service's
    own lockout comes at 5: the directory's comes first, as in many companies)."""
    directory.modify(directory.policy_dn, {"pwdMaxFailure": "3", "pwdLockoutDuration": "600"})


def binds_as(directory, uid: str, password: str) -> bool:
    """A bind straight at the directory, as the person's other company systems do it."""
    conn = Connection(Server(directory.url), directory.dn(uid), password)
    try:
        return conn.bind()
    finally:
        conn.unbind()


def create_local(app, username: str, email: str, password: str = LOCAL_ONLY) -> None:
    with app.app_context():
        accounts.create_local(username, email, password)


# -- a local account that has a directory person's name -------------------------------------


def test_a_local_accounts_wrong_passwords_never_lock_the_directory_person(
    app, browser, directory, ppolicy_lockout
):
    # grace here is a local account; grace in the directory is another person. Her
    # colleague's mistyped local passwords are not the directory's business.
    create_local(app, "grace", "grace.local@example.net")
    for attempt in range(3):
        r = browser.login("grace", f"not her local password {attempt}")
        assert r.status_code == 401 and WRONG in r.get_data(as_text=True)
    assert directory.failed_binds("grace") == {"pwdFailureTime": [], "pwdAccountLockedTime": []}
    # The directory's grace can still sign in everywhere else in the company.
    assert binds_as(directory, "grace", directory.passwords["grace"])
    # And the local account still signs in with its own password.
    assert browser.login("grace", LOCAL_ONLY).status_code == 302
    assert signed_in_as(browser) == "grace"


def test_a_local_password_is_never_sent_to_the_directory(app, browser, directory):
    create_local(app, "grace", "grace.local@example.net")
    before = directory.completed()
    assert browser.login("grace", LOCAL_ONLY).status_code == 302
    # Not a bind, not even a search: the account here owns the name, its password is here.
    assert directory.completed() == before
    assert directory.failed_binds("grace")["pwdFailureTime"] == []


# -- a directory-linked account -------------------------------------------------------------


def test_a_directory_person_with_a_local_password_uses_it_without_failed_binds(
    app, browser, directory, ppolicy_lockout
):
    # An administrator gave ada a local password as well. Using it three times must not
    # count three wrong directory passwords against her entry (and lock her out of the
    # company's other systems).
    directory_person_with_password(app, browser, directory)
    for _ in range(3):
        assert browser.login("ada", PASSWORD).status_code == 302
        assert signed_in_as(browser) == "ada"
        browser.logout()
    assert directory.failed_binds("ada") == {"pwdFailureTime": [], "pwdAccountLockedTime": []}
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    assert signed_in_as(browser) == "ada"


def test_a_directory_linked_account_is_checked_by_its_own_entry(
    app, browser, directory, verifications
):
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    browser.logout()
    verifications[0] = 0
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302
    assert verifications[0] == 0  # her directory password costs no hash here
    browser.logout()
    # Renamed here by an administrator: the name here, and the e-mail address, name the
    # account, whose entry is found by its stable id and bound, whatever the directory's
    # filter makes of the typed text.
    with app.app_context():
        user = accounts.find("ada")
        user.username = "lovelace"
        db.session.commit()
    for name in ("lovelace", "ada@example.org", "Ada@Example.ORG"):
        assert browser.login(name, directory.passwords["ada"]).status_code == 302, name
        assert signed_in_as(browser) == "lovelace"
        browser.logout()
    r = browser.login("lovelace", "not her password")
    assert r.status_code == 401 and WRONG in r.get_data(as_text=True)
    # A local password is never an account's that has none (it is a directory account).
    r = browser.login("lovelace", PASSWORD)
    assert r.status_code == 401 and WRONG in r.get_data(as_text=True)


# -- unknown names and wrong passwords: one answer, the same work ----------------------------


@pytest.fixture
def verifications(monkeypatch) -> list[int]:
    """Counts argon2 verifications (a unit seam: the real hasher runs)."""
    calls = [0]
    real = PasswordHasher.verify

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PasswordHasher, "verify", counted)
    return calls


def test_unknown_names_and_wrong_passwords_get_one_answer_and_the_same_work(
    app, browser, user, directory, verifications
):
    directory_person_with_password(app, browser, directory, "grace")  # directory + local
    assert browser.login("ada", directory.passwords["ada"]).status_code == 302  # directory
    browser.logout()
    # name -> the binds its wrong password costs: only a directory entry's own path binds.
    cases = {
        "nobody": 0,  # no account, not in the directory
        "linus": 1,  # no account yet, in the directory
        "alice": 0,  # a local account: never a bind
        "ada": 1,  # a directory-linked account: its own entry
        "grace": 1,  # a directory-linked account with a local password too
    }
    for name, binds in cases.items():
        for attempt in range(2):  # the first also warms the directory connections
            verifications[0] = 0
            before = directory.completed()
            r = browser.login(name, f"a wrong password {attempt}")
            after = directory.completed()
            assert r.status_code == 401 and WRONG in r.get_data(as_text=True), name
        # One argon2 verification and one directory search whoever it is (the dummy hash
        # for a name without a password here).
        assert verifications[0] == 1, name
        assert after["search"] - before["search"] == 1, name
        assert after["bind"] - before["bind"] == binds, name


def test_while_the_directory_is_down_a_local_wrong_password_looks_like_an_unknown_name(
    app, browser, user, directory
):
    directory.stop()
    answers = []
    for name in ("alice", "nobody"):
        r = browser.login(name, "a wrong password")
        answers.append((r.status_code, UNAVAILABLE in r.get_data(as_text=True)))
    assert answers == [(503, True), (503, True)]
    # Her right password needs no directory at all.
    assert browser.login("alice", PASSWORD).status_code == 302


def test_with_a_dn_template_the_entry_is_read_not_bound(directory):
    settings = Settings.from_config(
        ldap_settings(
            directory,
            LDAP_USER_BASE=None,
            LDAP_USER_DN_TEMPLATE=f"uid={{username}},{directory.people_dn}",
        )
    )
    connector = LdapConnector(settings)
    try:
        connector.look_up("grace")  # opens the service's connection (a bind)
        for name in ("grace", "nobody", "*)(uid=*"):
            before = directory.completed()
            connector.look_up(name)
            after = directory.completed()
            assert (after["bind"] - before["bind"], after["search"] - before["search"]) == (0, 1)
        # A linked account's entry is found by its stable id under the template's parent.
        found = connector.authenticate_linked(
            directory.entry_uuid("ada"), directory.passwords["ada"]
        )
        assert found is not None and found.username == "ada"
        assert connector.authenticate_linked(directory.entry_uuid("ada"), "wrong") is None
        assert connector.authenticate_linked("no-such-uuid", directory.passwords["ada"]) is None
    finally:
        connector.close()


# -- registration: a directory person's name is theirs ---------------------------------------

REGISTER = {"email": "someone@example.net", "password": PASSWORD, "confirm": PASSWORD}


def test_a_directory_persons_name_cannot_be_registered_locally(app, browser, directory):
    # Else anyone could take "grace" before grace's first sign-in: the name would be the
    # local account's, and the directory's grace refused under it.
    r = browser.post("/register", {**REGISTER, "username": "grace"})
    assert r.status_code == 400 and "That username is taken" in r.get_data(as_text=True)
    with app.app_context():
        assert accounts.find("grace") is None
    assert directory.failed_binds("grace")["pwdFailureTime"] == []
    assert browser.login("grace", directory.passwords["grace"]).status_code == 302
    browser.logout()
    assert browser.post("/register", {**REGISTER, "username": "grace-h"}).status_code == 302


def test_registration_waits_for_a_directory_that_cannot_answer(app, browser, directory):
    directory.stop()
    r = browser.post("/register", {**REGISTER, "username": "newcomer"})
    assert r.status_code == 400 and DIRECTORY_UNCHECKED in r.get_data(as_text=True)
    with app.app_context():
        assert accounts.find("newcomer") is None
    directory.start()
    assert browser.post("/register", {**REGISTER, "username": "newcomer"}).status_code == 302


def test_a_password_asked_again_of_a_local_account_never_reaches_the_directory(
    app, directory, ppolicy_lockout
):
    """Before a dangerous action (the admin console's confirmations, second-factor changes)
    the password is asked again: the account's own checks run, as at the login form, so a
    local grace's mistyped passwords do not lock the directory's grace."""
    from flask_login import login_user

    from identity.auth import reauth
    from identity.models import User

    create_local(app, "grace", "grace.local@example.net")
    for attempt in range(3):
        with app.test_request_context("/"):
            login_user(User.find("grace"))
            assert reauth.password_problem(f"not hers {attempt}") == reauth.NOT_YOURS
    before = directory.completed()
    with app.test_request_context("/"):
        login_user(User.find("grace"))
        assert reauth.password_problem(LOCAL_ONLY) is None
    assert directory.completed() == before  # the right one: not even a search
    assert directory.failed_binds("grace") == {"pwdFailureTime": [], "pwdAccountLockedTime": []}
    assert binds_as(directory, "grace", directory.passwords["grace"])


# -- an administrator giving a local account a directory person's name ----------------------


@pytest.fixture
def root(app, browser):
    """root, a local administrator, signed in on `browser`."""
    with app.app_context():
        admin = accounts.create_local("root", "root@example.org", PASSWORD)
        admin.is_admin = True
        db.session.commit()
    assert browser.login("root").status_code == 302


NEW_ACCOUNT = {
    "email": "grace.local@example.net",
    "setup": "password",
    "password": LOCAL_ONLY,
    "confirm": LOCAL_ONLY,
    "admin_password": PASSWORD,
}


def test_the_console_will_not_give_a_local_account_a_directory_persons_name(
    app, browser, directory, root
):
    # As at registration: the local account would own "grace", and the directory's grace
    # would be refused under her own name.
    r = browser.post("/admin/users/new", {**NEW_ACCOUNT, "username": "Grace"})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and IN_DIRECTORY in page
    with app.app_context():
        assert accounts.find("grace") is None
    r = browser.post("/admin/users/new", {**NEW_ACCOUNT, "username": "grace-h"})
    assert r.status_code == 303
    # Nor may a local account be renamed to it.
    with app.app_context():
        local_id = accounts.find("grace-h").id
    r = browser.post(
        f"/admin/users/{local_id}/edit",
        {"username": "grace", "email": "grace.local@example.net", "admin_password": PASSWORD},
    )
    assert r.status_code == 400 and IN_DIRECTORY in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, local_id).username == "grace-h"
    # The directory's grace still signs in as herself.
    browser.logout()
    assert browser.login("grace", directory.passwords["grace"]).status_code == 302
    assert signed_in_as(browser) == "grace"


def test_a_directory_linked_account_may_be_renamed_back_to_its_entrys_name(
    app, browser, directory, root
):
    other = Browser(app.test_client())
    assert other.login("ada", directory.passwords["ada"]).status_code == 302
    with app.app_context():
        ada_id = accounts.find("ada").id
    for name in ("ada-lovelace", "ada"):
        r = browser.post(
            f"/admin/users/{ada_id}/edit", {"username": name, "admin_password": PASSWORD}
        )
        assert r.status_code in (302, 303), r.get_data(as_text=True)
        with app.app_context():
            assert db.session.get(User, ada_id).username == name


def test_a_directory_linked_account_may_not_take_another_directory_persons_name(
    app, browser, directory, root
):
    # Ada's account renamed "grace": apps would be told preferred_username "grace" for
    # Ada, and the directory's grace, signing in, would get an account named "grace-2".
    other = Browser(app.test_client())
    assert other.login("ada", directory.passwords["ada"]).status_code == 302
    with app.app_context():
        ada_id = accounts.find("ada").id
    r = browser.post(
        f"/admin/users/{ada_id}/edit", {"username": "grace", "admin_password": PASSWORD}
    )
    assert r.status_code == 400 and IN_DIRECTORY in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, ada_id).username == "ada"
    # The command line edits through the same form.
    result = app.test_cli_runner().invoke(args=["user", "edit", "ada", "--username", "grace"])
    assert result.exit_code == 1 and IN_DIRECTORY in result.output, result.output
    assert "Traceback" not in result.output
    browser.logout()
    assert browser.login("grace", directory.passwords["grace"]).status_code == 302
    assert signed_in_as(browser) == "grace"


def test_the_console_waits_for_a_directory_that_cannot_answer(app, browser, directory, root):
    directory.stop()
    r = browser.post("/admin/users/new", {**NEW_ACCOUNT, "username": "newcomer"})
    assert r.status_code == 400 and DIRECTORY_UNCHECKED in r.get_data(as_text=True)
    with app.app_context():
        assert accounts.find("newcomer") is None
    directory.start()
    r = browser.post("/admin/users/new", {**NEW_ACCOUNT, "username": "newcomer"})
    assert r.status_code == 303


def test_the_cli_will_not_give_a_local_account_a_directory_persons_name(app, directory):
    runner = app.test_cli_runner()
    args = ["user", "create", "--username", "grace", "--email", "g@example.net"]
    result = runner.invoke(args=[*args, "--password-stdin"], input=LOCAL_ONLY + "\n")
    assert result.exit_code == 1 and IN_DIRECTORY in result.output, result.output
    assert "Traceback" not in result.output
    with app.app_context():
        assert accounts.find("grace") is None
    directory.stop()
    args[3] = "newcomer"
    result = runner.invoke(args=[*args, "--password-stdin"], input=LOCAL_ONLY + "\n")
    assert result.exit_code == 1 and DIRECTORY_UNCHECKED in result.output, result.output
