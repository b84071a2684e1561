"""The second step after a social sign-in (the provider emulator): no session before the
code, `fed` kept in the methods; an account without a password confirms with a code."""

from __future__ import annotations

import time

import pyotp
import pytest
from test_mfa import enrolled, now_code
from test_social import dance, signed_in_as, social_settings

from identity.auth import mfa
from identity.models import User


@pytest.fixture
def app_overrides(emulator):
    return social_settings(emulator)


def test_a_social_sign_in_asks_for_the_second_factor_before_any_session(app, browser, emulator):
    dance(browser, emulator, "google")
    browser.logout()
    secret, _ = enrolled(app, "grace")
    r = dance(browser, emulator, "google", next_url="/account#apps")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login/second-factor")
    assert signed_in_as(browser) is None
    r = browser.post("/login/second-factor", {"code": now_code(secret)})
    assert r.status_code == 303 and r.headers["Location"] == "/account#apps"
    assert signed_in_as(browser) == "grace"
    with browser.client.session_transaction() as s:
        assert s["amr"] == ["fed", "otp", "mfa"] and s["connector"] == "google"


def test_an_account_without_a_password_removes_its_app_with_a_code(app, browser, emulator):
    dance(browser, emulator, "google")
    secret, _ = enrolled(app, "grace")
    page = browser.get("/account").get_data(as_text=True)
    assert "A code from your authenticator app" in page
    r = browser.post("/account/two-factor/remove", {"proof": "123"}, token_from="/account")
    assert r.status_code == 303
    with app.app_context():
        assert mfa.factors(User.find("grace")) == ["totp"]
    code = pyotp.TOTP(secret).at(time.time())
    browser.post("/account/two-factor/remove", {"proof": code}, token_from="/account")
    with app.app_context():
        assert mfa.factors(User.find("grace")) == []
