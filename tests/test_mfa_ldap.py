"""Directory accounts and second factors (real slapd): a member of IDP_LDAP_ADMIN_GROUP is an
administrator, so the default policy has them enrol right after the directory password; the
second step comes after the directory vouched for the account."""

from __future__ import annotations

import pytest
from test_ldap import ldap_settings
from test_mfa import SECRET_RE, enrolled, now_code


@pytest.fixture
def app_overrides(directory):
    return ldap_settings(directory, MFA_REQUIRED="admins")


def test_a_directory_admin_enrols_right_after_the_directory_password(browser, directory):
    r = browser.login("ada", directory.passwords["ada"], next="/admin/")
    assert r.headers["Location"].endswith("/login/second-factor")
    page = browser.get("/login/second-factor/enrol").get_data(as_text=True)
    assert browser.get("/admin/").status_code == 302
    secret = SECRET_RE.search(page).group(1).replace(" ", "")
    r = browser.post("/login/second-factor/enrol", {"code": now_code(secret)})
    assert r.status_code == 200 and 'href="/admin/"' in r.get_data(as_text=True)
    assert browser.get("/admin/").status_code == 200


def test_a_directory_member_outside_the_admin_group_is_not_asked(browser, directory):
    r = browser.login("grace", directory.passwords["grace"])
    assert r.headers["Location"] == "/account"


def test_a_leaver_is_refused_at_the_first_factor_not_asked_for_a_code(app, browser, directory):
    browser.login("grace", directory.passwords["grace"])
    browser.logout()
    enrolled(app, "grace")
    directory.modify(directory.dn("grace"), {"pwdAccountLockedTime": "000001010000Z"})
    r = browser.login("grace", directory.passwords["grace"])
    assert r.status_code in (401, 403)  # as the directory answers a locked entry
    with browser.client.session_transaction() as s:
        assert "second_step" not in s
