"""The admin console's overview: counts, the health of each dependency (the checks /readyz
runs, with their details for admins only), warnings, and admins landing there."""

from __future__ import annotations

import re

import pytest
from ldap_server import dead_url
from redis_server import REDIS_URL
from test_admin_console import make_admin
from test_ldap import ldap_settings

from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity.admin.overview import counts
from identity.auth import accounts
from identity.extensions import db
from identity.oidc import clients
from identity.settings.ldap import normal_dn


def page_of(browser) -> str:
    r = browser.get("/admin/")
    assert r.status_code == 200
    return r.get_data(as_text=True)


def figure(html: str, label: str) -> int:
    found = re.search(rf"<strong>(\d+)</strong> {label}s?\b", html)
    assert found, f"no figure for {label}"
    return int(found.group(1))


def test_counts_accounts_admins_apps_and_sign_ins(app, browser, user):
    make_admin(app)
    with app.app_context():
        accounts.create_local("bob", "bob@example.org", PASSWORD).disabled = True
        clients.create("Wiki", ["https://wiki.example.org/callback"])
        db.session.commit()
    browser.login("alice")
    browser.logout()
    browser.login("alice", "not her password")
    browser.login("root")
    html = page_of(browser)
    assert figure(html, "account") == 3
    assert "2 active, 1 disabled" in html
    assert figure(html, "admin") == 1
    assert figure(html, "app") == 1
    assert figure(html, "sign-in") == 2  # alice, then root
    assert "1 failed" in html


def test_an_admin_by_directory_group_is_counted(app):
    admins = normal_dn("cn=IDP-Admins,ou=groups,dc=example,dc=org")
    app.config["LDAP_ADMIN_GROUP"] = admins
    with app.app_context():
        accounts.create_local("ada", "ada@example.org", PASSWORD).group_dns = [admins]
        accounts.create_local("grace", "grace@example.org", PASSWORD).group_dns = [
            normal_dn("cn=idp-admins-old,ou=groups,dc=example,dc=org")
        ]
        accounts.create_local("root", "root@example.org", PASSWORD).is_admin = True
        db.session.commit()
        assert counts()["admins"] == 2


def test_warnings_for_no_smtp_and_no_redis(app, browser):
    make_admin(app)
    browser.login("root")
    html = page_of(browser)
    assert "Needs attention" in html
    assert "No SMTP server: password-reset and e-mail verification links go to the" in html
    assert "<code>IDP_MAIL_SERVER</code>" in html
    assert "Redis is not set: failed sign-ins, lockouts and rate limits are counted per" in html
    assert "<code>IDP_REDIS_URL</code>" in html


def test_healthy_dependencies_and_no_warnings(database_url, tmp_path, smtp, directory):
    controller, _ = smtp
    app = make_app(
        database_url,
        tmp_path,
        REDIS_URL=REDIS_URL,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=controller.port,
        MAIL_USE_STARTTLS=False,
        **ldap_settings(directory),
    )
    with app.app_context():
        db.create_all()
    try:
        b = Browser(https_client(app))
        make_admin(app)
        b.login("root")
        html = page_of(b)
    finally:
        dispose(app)
    assert "Needs attention" not in html
    rows = re.findall(r'<tr class="(ok|failed)">\s*<th scope="row">(\w+)</th>', html)
    assert rows == [("ok", "Database"), ("ok", "Redis"), ("ok", "Directory"), ("ok", "Mail")]


def test_a_failed_check_is_detailed_for_admins_only(database_url, tmp_path, directory):
    dead = dead_url()
    app = make_app(
        database_url,
        tmp_path,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=int(dead.rsplit(":", 1)[1]),
        MAIL_USE_STARTTLS=False,
        MAIL_TIMEOUT=2,
        **ldap_settings(directory, LDAP_BIND_PASSWORD="not the service password"),
    )
    with app.app_context():
        db.create_all()
    try:
        b = Browser(https_client(app))
        make_admin(app)
        b.login("root")
        html = page_of(b)
        ready = b.get("/readyz")
    finally:
        dispose(app)
    assert '<tr class="failed">\n        <th scope="row">Directory</th>' in html
    assert '<tr class="failed">\n        <th scope="row">Mail</th>' in html
    assert "Directory not reachable or refused: service bind as" in html
    assert "check IDP_LDAP_BIND_DN and IDP_LDAP_BIND_PASSWORD" in html
    assert "Mail not reachable or refused: " in html and "Connection refused" in html
    # /readyz runs the same checks, and tells anyone the type only.
    assert ready.status_code == 503
    assert ready.json["checks"]["directory"] == {
        "ok": False,
        "error": "DirectoryMisconfigured",
        "ms": ready.json["checks"]["directory"]["ms"],
    }
    assert "mail" not in ready.json["checks"]  # a mail outage does not make a node unready
    assert "IDP_LDAP_BIND" not in ready.get_data(as_text=True)


def test_the_last_directory_configuration_fault_is_on_the_overview(
    database_url, tmp_path, directory
):
    app = make_app(
        database_url,
        tmp_path,
        **ldap_settings(directory, LDAP_USER_BASE="ou=staff,dc=example,dc=org"),
    )
    with app.app_context():
        db.create_all()
    try:
        b = Browser(https_client(app))
        assert b.login("ada", directory.passwords["ada"]).status_code == 503
        make_admin(app)
        b.login("root")
        html = page_of(b)
    finally:
        dispose(app)
    assert "Directory sign-ins failed on a configuration fault at" in html
    assert "the user search base ou=staff,dc=example,dc=org does not exist" in html


@pytest.mark.parametrize("who,lands", [("root", "/admin/"), ("alice", "/account")])
def test_an_admin_lands_on_the_console_after_signing_in(app, browser, user, who, lands):
    make_admin(app)
    r = browser.login(who)
    assert r.status_code == 302 and r.headers["Location"] == lands
    # Already signed in, the login page sends them there too; a `next` still wins.
    assert browser.get("/login").headers["Location"] == lands
    browser.logout()
    r = browser.post("/login", {"username": who, "password": PASSWORD, "next": "/account"})
    assert r.headers["Location"] == "/account"
