"""A directory the service's own settings are wrong for: people are told to tell the
administrators (not to try again later), the log and the audit log say what is wrong."""

from __future__ import annotations

import pytest
from test_ldap import UNAVAILABLE, WRONG, ldap_settings

from conftest import Browser, dispose, https_client, make_app
from identity.connectors.base import DirectoryMisconfigured
from identity.connectors.ldap import LdapConnector
from identity.connectors.ldap_connection import Settings
from identity.connectors.ldap_probe import probe
from identity.extensions import db
from identity.models import Event

MISCONFIGURED = "Sign-in with the company directory is misconfigured on this service"

FAULTS = {
    "bind_password": (
        {"LDAP_BIND_PASSWORD": "not the service password"},
        "check IDP_LDAP_BIND_DN and IDP_LDAP_BIND_PASSWORD",
    ),
    "bind_dn": (
        {"LDAP_BIND_DN": "cn=nobody,ou=services,dc=example,dc=org"},
        "check IDP_LDAP_BIND_DN and IDP_LDAP_BIND_PASSWORD",
    ),
    "user_base": (
        {"LDAP_USER_BASE": "ou=staff,dc=example,dc=org"},
        "the user search base ou=staff,dc=example,dc=org does not exist in the directory: "
        "check IDP_LDAP_USER_BASE",
    ),
    "user_filter": (
        {"LDAP_USER_FILTER": "(uid={username}"},
        "(uid=ada is not a valid LDAP filter: check IDP_LDAP_USER_FILTER",
    ),
}


@pytest.fixture(params=sorted(FAULTS))
def fault(request, directory, database_url, tmp_path):
    overrides, message = FAULTS[request.param]
    app = make_app(database_url, tmp_path, **ldap_settings(directory, **overrides))
    with app.app_context():
        db.create_all()
    yield app, message
    dispose(app)


def test_a_configuration_fault_tells_people_to_tell_the_admins(fault, directory, caplog):
    app, message = fault
    r = Browser(https_client(app)).login("ada", directory.passwords["ada"])
    body = r.get_data(as_text=True)
    assert r.status_code == 503
    assert MISCONFIGURED in body and "Please tell your administrators" in body
    assert UNAVAILABLE not in body and WRONG not in body and "try again in" not in body
    assert "connector ldap is misconfigured" in caplog.text and message in caplog.text
    with app.app_context():
        event = db.session.query(Event).filter_by(type="signin.failure").one()
    assert event.data["reason"] == "misconfigured" and message in event.data["detail"]


def test_a_directory_that_is_down_is_still_try_again_later(directory, database_url, tmp_path):
    app = make_app(database_url, tmp_path, **ldap_settings(directory))
    with app.app_context():
        db.create_all()
    directory.stop()
    try:
        r = Browser(https_client(app)).login("ada", directory.passwords["ada"])
    finally:
        directory.start()
        dispose(app)
    assert r.status_code == 503 and UNAVAILABLE in r.get_data(as_text=True)
    assert MISCONFIGURED not in r.get_data(as_text=True)


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_the_probe_names_the_setting_to_change(directory, name):
    overrides, message = FAULTS[name]
    settings = Settings.from_config(ldap_settings(directory, **overrides))
    with pytest.raises(DirectoryMisconfigured) as caught:
        probe(settings)
    setting = message.rsplit("check ", 1)[1]  # the same setting the sign-in's message names
    assert setting in str(caught.value)
    probe(Settings.from_config(ldap_settings(directory)))  # the right settings pass


def test_a_missing_user_base_is_not_a_wrong_password(directory):
    connector = LdapConnector(
        Settings.from_config(ldap_settings(directory, LDAP_USER_BASE="ou=staff,dc=example,dc=org"))
    )
    try:
        with pytest.raises(DirectoryMisconfigured, match="IDP_LDAP_USER_BASE"):
            connector.authenticate("ada", directory.passwords["ada"])
    finally:
        connector.close()


def test_a_certificate_no_server_passes_is_a_configuration_fault(
    directory, database_url, tmp_path, caplog
):
    app = make_app(
        database_url, tmp_path, **ldap_settings(directory, LDAP_CA_FILE=directory.wrong_ca_file)
    )
    with app.app_context():
        db.create_all()
    try:
        r = Browser(https_client(app)).login("ada", directory.passwords["ada"])
    finally:
        dispose(app)
    assert r.status_code == 503 and MISCONFIGURED in r.get_data(as_text=True)
    assert "check that IDP_LDAP_URL's host is among the certificate's names" in caplog.text


@pytest.fixture
def ada_with_a_password(directory, database_url, tmp_path):
    """ada signed in once through a directory that works (her account is linked to her entry,
    and an administrator through idp-admins), then got a local password too; then the
    service's directory settings go wrong (a wrong service password)."""
    from sqlalchemy import select

    from conftest import PASSWORD
    from identity.admin import accounts
    from identity.models import User

    good = make_app(database_url, tmp_path / "good", **ldap_settings(directory))
    with good.app_context():
        db.create_all()
    assert Browser(https_client(good)).login("ada", directory.passwords["ada"]).status_code == 302
    with good.app_context():
        ada = db.session.scalar(select(User).where(User.username == "ada"))
        accounts.set_password(ada, PASSWORD, via="cli")
    # The login form checks local passwords only: the directory is reached by re-checks.
    overrides = {"LDAP_BIND_PASSWORD": "not the service password", "PASSWORD_CONNECTORS": ["local"]}
    bad = make_app(database_url, tmp_path / "bad", **ldap_settings(directory, **overrides))
    yield bad, PASSWORD
    dispose(bad)
    dispose(good)


def test_a_configuration_fault_at_the_recheck_is_not_try_again_later(ada_with_a_password):
    # Another way into a directory-linked account (her local password) reads the entry
    # again; the service's own settings being wrong is said as such, as on the login form.
    app, password = ada_with_a_password
    app.config["LDAP_RECHECK_SECONDS"] = 0
    r = Browser(https_client(app)).login("ada", password)
    body = r.get_data(as_text=True)
    assert r.status_code == 503
    assert MISCONFIGURED in body and "try again in" not in body.lower()


def test_the_console_says_the_directory_settings_are_wrong(ada_with_a_password):
    app, password = ada_with_a_password
    browser = Browser(https_client(app))
    assert browser.login("ada", password).status_code == 302  # the entry was just read
    assert browser.get("/admin/users").status_code == 200
    app.config["LDAP_RECHECK_SECONDS"] = 0
    r = browser.get("/admin/users")
    body = r.get_data(as_text=True)
    assert r.status_code == 503
    assert MISCONFIGURED in body and "try again in" not in body.lower()
