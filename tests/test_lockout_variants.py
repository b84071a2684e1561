"""Usernames and e-mail addresses are normalised (NFKC, case-folded, trimmed) before they key
a lockout or reach a connector: a variant the directory matches (fullwidth `ａda`) is the
same account for the lockout, for the directory and for the local accounts."""

from __future__ import annotations

import pytest
from test_admin_console import make_admin
from test_auth import register
from test_ldap import ldap_settings

from conftest import PASSWORD, Browser, https_client
from identity.extensions import db
from identity.models import Event, User
from identity.names import fold, normal

FULLWIDTH_ADA = "\uff41\uff44\uff41"  # ａｄａ
WRONG = "not the password at all"


@pytest.fixture
def app_overrides(directory):
    return ldap_settings(directory, LOCKOUT_ACCOUNT_FAILURES=3)


def attempt(browser, username, password=WRONG):
    return browser.post("/login", {"username": username, "password": password})


def test_fold_is_nfkc_casefold_trimmed():
    assert fold(" \uff21\uff44\uff41\u3000") == "ada"
    assert fold("ALICE@Example.ORG") == "alice@example.org"
    assert fold("\u212a") == "k"  # KELVIN SIGN
    assert fold("Stra\u00dfe") == "strasse"


def test_connectors_receive_nfkc_with_the_case_kept():
    assert normal(" \uff21\uff44\uff41\u3000") == "Ada"
    assert normal("Stra\u00dfe") == "Stra\u00dfe"


def test_a_fullwidth_variant_signs_in_as_the_directory_account(app, browser, directory):
    response = attempt(browser, FULLWIDTH_ADA, directory.passwords["ada"])
    assert response.status_code == 302
    with app.app_context():
        (ada,) = db.session.scalars(db.select(User)).all()
        assert ada.username == "ada"


def test_a_directory_name_that_full_case_folding_changes_still_signs_in(app, browser, directory):
    # OpenLDAP matches `straße` as `Straße` but not as `strasse`: it gets the name unfolded.
    directory.modify(directory.dn("ada"), {"uid": ["ada", "stra\u00dfe"]})
    assert attempt(browser, "Stra\u00dfe", directory.passwords["ada"]).status_code == 302
    # The lockout folds further: `STRASSE` and `straße` count as one (never fewer locks).
    other = Browser(https_client(app))
    for name in ("STRASSE", "stra\u00dfe", "Strasse"):
        assert attempt(other, name).status_code == 401
    assert attempt(other, "stra\u00dfe", directory.passwords["ada"]).status_code == 429


def test_a_locked_directory_account_is_locked_for_every_variant(app, browser, directory):
    for name in ("ada", "ADA", " \uff21da"):
        assert attempt(browser, name).status_code == 401
    for name in (FULLWIDTH_ADA, "ada", "Ａｄａ"):
        locked = attempt(browser, name, directory.passwords["ada"])
        assert locked.status_code == 429, name
        assert "Too many failed sign-in attempts" in locked.get_data(as_text=True)


def test_variants_of_a_local_account_share_its_lockout(app, browser, user):
    for name in ("\uff41lice", "ALICE", "alice\u3000"):
        assert attempt(browser, name).status_code == 401
    assert attempt(browser, "alice", PASSWORD).status_code == 429


def test_an_admin_locked_through_a_variant_cannot_confirm_a_dangerous_action(app, browser):
    make_admin(app)
    assert attempt(browser, "root", PASSWORD).status_code == 302
    other = Browser(https_client(app))
    for name in ("\uff52oot", "ROOT", "r\uff4f\uff4ft"):
        assert attempt(other, name).status_code == 401
    locked = browser.post(
        "/admin/keys/rotate", {"admin_password": PASSWORD}, token_from="/admin/keys"
    )
    assert "Too many failed sign-in attempts" in locked.get_data(as_text=True)


def test_registration_stores_the_folded_username_and_sees_variants_as_taken(app, browser, user):
    taken = register(browser, username="\uff41lice", email="other@example.org")
    assert taken.status_code == 400
    assert "That username is taken" in taken.get_data(as_text=True)
    created = register(browser, username="\uff22\uff2f\uff22", email="Bob@Example.org")
    assert created.status_code == 302
    with app.app_context():
        bob = User.find("bob")
        assert bob.username == "bob" and bob.email == "Bob@Example.org"


def test_a_reset_request_finds_the_account_by_any_form_of_its_address(app, browser, user):
    with app.app_context():
        before = db.session.query(Event).filter_by(type="password.reset_requested").count()
    response = browser.post("/reset", {"email": "\uff41lice@EXAMPLE.org"})
    assert response.status_code == 200
    with app.app_context():
        (event,) = db.session.scalars(
            db.select(Event).where(Event.type == "password.reset_requested").order_by(Event.id)
        ).all()[before:]
        assert event.user_id == user.id


def test_the_cli_creates_the_folded_username_and_sees_variants_as_taken(app, user):
    cli = app.test_cli_runner()
    base = ["user", "create", "--email", "dana@example.org", "--password-stdin"]
    taken = cli.invoke(args=[*base, "--username", "\uff21lice"], input=PASSWORD + "\n")
    assert taken.exit_code != 0 and "the username 'alice' is taken" in taken.output
    created = cli.invoke(args=[*base, "--username", "\uff24\uff41na"], input=PASSWORD + "\n")
    assert created.exit_code == 0, created.output
    with app.app_context():
        assert User.find("dana").username == "dana"
