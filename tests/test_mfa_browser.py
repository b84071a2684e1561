"""Headless Chromium over real HTTPS: a person sets up an authenticator app by reading the
key from the page (no scanning), then signs in with a code; screenshots of the enrolment and
second-factor pages (desktop, phone, dark) land in /tmp/mfa-shots for a human to look at."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pyotp
import pytest
from playwright.sync_api import Page, expect
from test_browser import DESKTOP, PHONE, launch, playwright, shots, watch_csp  # noqa: F401

from conftest import PASSWORD, dispose, make_app
from identity import certs
from identity.auth import accounts
from identity.extensions import db
from servers import https_server, nss_home

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def idp(database_url, tmp_path_factory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("mfa-idp")

    def build(port: int):
        app = make_app(database_url, tmp, ISSUER=f"https://localhost:{port}")
        with app.app_context():
            db.create_all()
            accounts.create_local("grace", "grace@example.org", PASSWORD)
        return app

    with https_server(build, tmp / "certs") as (app, port):
        yield SimpleNamespace(
            app=app, url=f"https://localhost:{port}", ca=tmp / "certs" / certs.CA_CERT
        )
    dispose(app)


@pytest.fixture(scope="module")
def home(idp, tmp_path_factory) -> Path:
    return nss_home(tmp_path_factory.mktemp("mfa-home"), idp.ca)


def sign_in(page: Page, idp) -> None:
    page.goto(f"{idp.url}/login")
    page.get_by_label("Username or e-mail").fill("grace")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def test_enrol_by_reading_the_key_then_sign_in_with_a_code(playwright, idp, home):  # noqa: F811
    context = launch(playwright, home, "profile-mfa", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)
        sign_in(page, idp)
        expect(page).to_have_url(f"{idp.url}/account")
        page.get_by_role("link", name="Set up an authenticator app").click()
        expect(page).to_have_url(f"{idp.url}/account/two-factor")
        expect(page.get_by_role("img", name="QR code")).to_be_visible()
        page.get_by_text("Cannot scan? Type the key instead").click()
        shots(page, "mfa", "enrol")
        secret = page.locator("#totp-secret").inner_text().replace(" ", "")
        page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Confirm").click()
        expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
        expect(page.locator("#recovery-codes li")).to_have_count(10)
        shots(page, "mfa", "recovery-codes")
        page.get_by_role("link", name="I have saved them").click()
        expect(page.locator("#recovery-left")).to_have_text("10 of 10 left")
        shots(page, "mfa", "account-with-second-factor")

        page.get_by_role("button", name="Sign out").click()
        sign_in(page, idp)
        expect(page).to_have_url(f"{idp.url}/login/second-factor")
        expect(page.get_by_label("Code")).to_be_focused()
        shots(page, "mfa", "second-factor")
        page.get_by_label("Code").fill("12ab56")
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("alert")).to_contain_text("6-digit code")
        shots(page, "mfa", "second-factor-error")
        # The code of the next step: the one used to enrol is spent.
        page.get_by_label("Code").fill(pyotp.TOTP(secret).at(time.time() + 30))
        page.get_by_role("button", name="Continue").click()
        expect(page).to_have_url(f"{idp.url}/account")
        assert csp == [], csp
    finally:
        context.close()


def test_forced_enrolment_page(playwright, idp, home):  # noqa: F811
    """The page an administrator meets at the first sign-in under the default policy."""
    idp.app.config["MFA_REQUIRED"] = "all"
    context = launch(playwright, home, "profile-mfa-forced", viewport=DESKTOP)
    try:
        with idp.app.app_context():
            accounts.create_local("henry", "henry@example.org", PASSWORD)
        page = context.new_page()
        page.goto(f"{idp.url}/login")
        page.get_by_label("Username or e-mail").fill("henry")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page).to_have_url(f"{idp.url}/login/second-factor/enrol")
        expect(page.get_by_text("must use a second factor")).to_be_visible()
        shots(page, "mfa", "enrol-forced")
    finally:
        idp.app.config["MFA_REQUIRED"] = "none"
        context.close()
