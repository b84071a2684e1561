"""Admins edit an account's username, e-mail address and name (password asked, audited, bad
input answered), and the user page says why a directory person's username differs from
the directory's."""

from __future__ import annotations

import html
import time

import pytest
from test_admin_console import make_admin
from test_ldap import ldap_settings

from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity.auth import accounts
from identity.extensions import db
from identity.models import Event, User


@pytest.fixture
def root(app, browser, user):
    make_admin(app)
    assert browser.login("root").status_code == 302


def alice_id(app) -> int:
    with app.app_context():
        return User.find("alice").id


def edit(browser, user_id, **fields):
    data = {"admin_password": PASSWORD, **fields}
    return browser.post(f"/admin/users/{user_id}/edit", data)


def test_an_admin_edits_username_email_and_name(app, browser, root, caplog):
    uid = alice_id(app)
    with app.app_context():
        User.find("alice").email_verified = True
        db.session.commit()
    page = browser.get(f"/admin/users/{uid}").get_data(as_text=True)
    assert f'href="/admin/users/{uid}/edit"' in page
    r = edit(browser, uid, username="Alice.L", email="alice@elsewhere.example", name="Alice L.")
    assert r.status_code == 302 and r.headers["Location"] == f"/admin/users/{uid}"
    shown = html.unescape(browser.get(r.headers["Location"]).get_data(as_text=True))
    assert "Saved alice.l: username, e-mail address, name changed." in shown
    assert "alice@elsewhere.example is not verified: a link to verify it was sent there." in shown
    with app.app_context():
        alice = db.session.get(User, uid)
        assert (alice.username, alice.email, alice.name) == (
            "alice.l",
            "alice@elsewhere.example",
            "Alice L.",
        )
        assert alice.email_verified is False
        event = db.session.query(Event).filter_by(type="admin.user_edited").one()
    assert event.data == {
        "changed": ["username", "email", "name"],
        "username_from": "alice",
        "username_to": "alice.l",
        "by": "root",
        "via": "console",
    }
    # No SMTP here: the message, link included, is logged (by the mail thread).
    deadline = time.monotonic() + 5
    while "To confirm that alice@elsewhere" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "To confirm that alice@elsewhere.example is your address" in caplog.text
    browser.logout()
    assert browser.login("alice.l").status_code == 302  # the new username signs in
    assert browser.logout() and browser.login("alice").status_code == 401


def test_the_admins_password_is_asked(app, browser, root):
    uid = alice_id(app)
    r = edit(browser, uid, username="mallory", email="", name="", admin_password="wrong one")
    assert r.status_code == 400
    with app.app_context():
        assert db.session.get(User, uid).username == "alice"
        assert db.session.query(Event).filter_by(type="admin.user_edited").count() == 0


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"username": "bob"}, "Another account has this username."),
        (
            {"username": "ＢＯＢ"},
            "Another account has this username: 'ＢＯＢ' is the same as 'bob' "
            "(case and width do not count).",
        ),
        (
            {"username": "no spaces"},
            "Use letters, digits, &#39;.&#39;, &#39;_&#39; and &#39;-&#39;",
        ),
        ({"username": ""}, "Enter a username."),
        ({"email": "not an address"}, "Enter a valid e-mail address"),
        (
            {"email": "BOB@Example.org"},
            "Another account has this e-mail address: &#39;BOB@Example.org&#39; is the same as "
            "&#39;bob@example.org&#39;",
        ),
        ({"name": "x" * 201}, "Use at most 200 characters."),
        ({"name": "tab\x00"}, "Contains characters that cannot be used"),
    ],
)
def test_bad_names_are_answered_clearly(app, browser, root, fields, message):
    with app.app_context():
        accounts.create_local("bob", "bob@example.org", PASSWORD)
    uid = alice_id(app)
    data = {"username": "alice", "email": "Alice@Example.org", "name": "Alice", **fields}
    r = edit(browser, uid, **data)
    body = r.get_data(as_text=True)
    assert r.status_code == 400, body
    assert message.replace("'", "&#39;") in body or message in body
    with app.app_context():
        assert db.session.get(User, uid).username == "alice"


def test_keeping_ones_own_names_is_not_a_collision(app, browser, root):
    uid = alice_id(app)
    r = edit(browser, uid, username="ALICE", email="alice@EXAMPLE.org", name="Alice Liddell")
    assert r.status_code == 302
    with app.app_context():
        alice = db.session.get(User, uid)
        assert alice.username == "alice" and alice.email == "alice@EXAMPLE.org"
        event = db.session.query(Event).filter_by(type="admin.user_edited").one()
    assert event.data["changed"] == ["email"]  # only the spelling of the address


@pytest.fixture
def with_directory(database_url, tmp_path, directory):
    # People may type their uid or their e-mail address (as Active Directory's UPN).
    settings = ldap_settings(directory, LDAP_USER_FILTER="(|(uid={username})(mail={username}))")
    app = make_app(database_url, tmp_path, **settings)
    with app.app_context():
        db.create_all()
    yield app, Browser(https_client(app))
    dispose(app)


def test_a_directory_username_taken_here_is_explained(with_directory, directory):
    app, b = with_directory
    make_admin(app)
    with app.app_context():
        accounts.create_local("ada", "ada.local@example.org", PASSWORD)
    # "ada" is the local account's name here; the directory's ada signs in with her e-mail
    # address and gets an account of her own, ada-2.
    assert b.login("ada@example.org", directory.passwords["ada"]).status_code == 302
    b.logout()
    with app.app_context():
        ada2 = User.find("ada-2")
        ada2_id, local_id = ada2.id, User.find("ada").id
    b.login("root")
    page = html.unescape(b.get(f"/admin/users/{ada2_id}").get_data(as_text=True))
    assert (
        "Company directory calls this person <strong>ada</strong>; <strong>ada</strong> was "
        "already another account’s username here when this account was created, so it got "
        "<strong>ada-2</strong>." in page
    )
    assert 'id="renamed"' not in b.get(f"/admin/users/{local_id}").get_data(as_text=True)


def test_directory_fields_are_not_edited_here(with_directory, directory):
    app, b = with_directory
    make_admin(app)
    assert b.login("grace", directory.passwords["grace"]).status_code == 302
    b.logout()
    with app.app_context():
        grace = User.find("grace")
        uid, email, name = grace.id, grace.email, grace.name
    b.login("root")
    form = b.get(f"/admin/users/{uid}/edit").get_data(as_text=True)
    assert "Comes from the company directory and is read again at each sign-in" in form
    assert 'readonly aria-describedby="email-hint"' in form
    r = edit(b, uid, username="grace.h", email="grace@elsewhere.example", name="Someone Else")
    assert r.status_code == 302
    with app.app_context():
        grace = db.session.get(User, uid)
        assert (grace.username, grace.email, grace.name) == ("grace.h", email, name)


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["user", "edit", *args])


def test_the_command_line_edits_names_with_the_same_rules(app, user, caplog):
    with app.app_context():
        accounts.create_local("bob", "bob@example.org", PASSWORD)
    r = cli(app, "alice", "--username", "ＢＯＢ")
    assert r.exit_code == 1 and "Error: --username: Another account has this username" in r.output
    r = cli(app, "alice", "--email", "nope")
    assert r.exit_code == 1 and "Error: --email: Enter a valid e-mail address" in r.output
    r = cli(app, "alice", "--username", "alice.l", "--email", "alice@elsewhere.example")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == (
        "alice.l: username, email changed; alice@elsewhere.example is not verified: "
        "a link to verify it was sent there"
    )
    assert cli(app, "alice.l", "--name", "Alice Liddell").output.strip() == (
        "alice.l: nothing changed"
    )
    with app.app_context():
        alice = User.find("alice.l")
        assert alice.email == "alice@elsewhere.example" and not alice.email_verified
        event = db.session.query(Event).filter_by(type="admin.user_edited").one()
    assert event.data["via"] == "cli" and event.data["username_from"] == "alice"
    # The link is IDP_ISSUER's (no SMTP here: the message is logged by the mail thread).
    deadline = time.monotonic() + 5
    while "https://idp.test/verify-email/" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "https://idp.test/verify-email/" in caplog.text
