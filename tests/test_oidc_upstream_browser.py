"""Headless Chromium signs in with an upstream OpenID provider: the button on the login page,
the upstream (oidc_upstream_emulator.py, over HTTPS with a CA of its own), our callback and
the account page; and the page a refused sign-in shows. Screenshots in
test-artifacts/oidc-upstream/ (desktop and phone, light and dark)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from playwright.sync_api import expect
from sqlalchemy import select
from test_browser import TIMEOUT_MS, launch, playwright, shots  # noqa: F401 - fixture
from test_social import social_settings

from conftest import PASSWORD, dispose, make_app
from identity import certs
from identity.auth import accounts
from identity.extensions import db
from identity.models import User
from servers import https_server, nss_home, require_certutil

pytestmark = pytest.mark.browser


@pytest.fixture
def served(database_url, tmp_path, upstream_server, provider_emulator) -> Iterator[SimpleNamespace]:
    """This service on https://localhost:<port> with Google, Facebook, X and one upstream."""
    upstream_server.reset()

    # Both emulators have a CA of their own: one file for the service's calls.
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(
        Path(provider_emulator.ca_file).read_text() + Path(upstream_server.ca_file).read_text()
    )

    def build(port: int):
        app = make_app(
            database_url,
            tmp_path,
            ISSUER=f"https://localhost:{port}",
            **social_settings(provider_emulator, SOCIAL_CA_FILE=str(bundle)),
            OIDC_UPSTREAMS=[upstream_server.settings()],
        )
        with app.app_context():
            db.create_all()
        return app

    with https_server(build, tmp_path / "certs") as (app, port):
        yield SimpleNamespace(
            app=app, url=f"https://localhost:{port}", ca=tmp_path / "certs" / certs.CA_CERT
        )
    dispose(app)
    upstream_server.reset()


@pytest.fixture
def home(served, upstream_server, tmp_path) -> Path:
    home = nss_home(tmp_path / "home", served.ca)
    subprocess.run(
        [
            require_certutil(),
            *("-d", f"sql:{home}/.pki/nssdb", "-A", "-t", "C,,", "-n", "upstream-ca"),
            *("-i", upstream_server.ca_file),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return home


def test_sign_in_with_an_upstream_in_chromium(playwright, served, home, upstream_server):  # noqa: F811
    context = launch(playwright, home, "profile")
    try:
        page = context.new_page()
        page.goto(f"{served.url}/login")
        button = page.get_by_role("link", name="Continue with Corp SSO")
        expect(button).to_be_visible()
        shots(page, "oidc-upstream", "login")
        button.click()
        page.wait_for_url(f"{served.url}/account", timeout=TIMEOUT_MS)
        expect(page.locator("main")).to_contain_text("oscar")
        expect(page.locator("main")).to_contain_text("Corp SSO")
        shots(page, "oidc-upstream", "account")

        upstream_server.deny = True
        page.context.clear_cookies()
        page.goto(f"{served.url}/login")
        page.get_by_role("link", name="Continue with Corp SSO").click()
        page.wait_for_url(f"{served.url}/login/oidc/corp/callback*", timeout=TIMEOUT_MS)
        expect(page.locator("h1")).to_have_text("Sign-in with Corp SSO did not complete")
        expect(page.get_by_role("alert")).to_contain_text("You did not allow access")
        shots(page, "oidc-upstream", "refused")
    finally:
        context.close()


def test_admin_checks_an_upstream_in_chromium(playwright, served, home, upstream_server):  # noqa: F811
    with served.app.app_context():
        accounts.create_local("root", "root@example.org", PASSWORD).is_admin = True
        db.session.commit()
    context = launch(playwright, home, "profile-admin")
    try:
        page = context.new_page()
        page.goto(f"{served.url}/login?next=/admin/upstreams")
        page.get_by_label("Username or e-mail").fill("root")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(f"{served.url}/admin/upstreams", timeout=TIMEOUT_MS)
        expect(page.locator("main")).to_contain_text(f"{served.url}/login/oidc/corp/callback")
        page.get_by_role("button", name="Check discovery and keys").click()
        expect(page.get_by_role("status")).to_contain_text("all is well")
        shots(page, "oidc-upstream", "admin-check")
        upstream_server.discovery_issuer = "https://evil.example/op"
        page.get_by_role("button", name="Check discovery and keys").click()
        expect(page.get_by_role("alert")).to_contain_text("wrong_issuer")
        shots(page, "oidc-upstream", "admin-check-failed")
        upstream_server.discovery_issuer = None

        page.get_by_role("link", name="Add an OpenID Connect provider").click()
        page.get_by_label("Id", exact=True).fill("partner")
        page.get_by_label("Button label").fill("Partner ID")
        page.get_by_label("Issuer URL").fill("http://partner.example")
        page.get_by_label("Client id").fill("idp-downstream")
        page.get_by_label("Client secret").fill(upstream_server.secret)
        page.get_by_label("Your password (to confirm)").fill(PASSWORD)
        page.get_by_role("button", name="Add the provider").click()
        expect(page.get_by_role("alert")).to_contain_text("Must be an https:// URL")
        shots(page, "oidc-upstream", "admin-add-refused")
        page.get_by_label("Issuer URL").fill(upstream_server.issuer)
        page.get_by_label("Client secret").fill(upstream_server.secret)
        page.get_by_label("Your password (to confirm)").fill(PASSWORD)
        page.get_by_role("button", name="Add the provider").click()
        page.wait_for_url(f"{served.url}/admin/upstreams", timeout=TIMEOUT_MS)
        expect(page.get_by_role("heading", name="Partner ID")).to_be_visible()
        shots(page, "oidc-upstream", "admin-list")
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{served.url}/login")
        page.get_by_role("link", name="Continue with Partner ID").click()
        page.wait_for_url(f"{served.url}/account", timeout=TIMEOUT_MS)
        expect(page.locator("main")).to_contain_text("Partner ID")
    finally:
        context.close()


def test_admin_tries_a_sign_in_in_chromium(playwright, served, home, upstream_server):  # noqa: F811
    with served.app.app_context():
        accounts.create_local("root", "root@example.org", PASSWORD).is_admin = True
        db.session.commit()
    context = launch(playwright, home, "profile-trial")
    try:
        page = context.new_page()
        page.goto(f"{served.url}/login?next=/admin/upstreams")
        page.get_by_label("Username or e-mail").fill("root")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(f"{served.url}/admin/upstreams", timeout=TIMEOUT_MS)
        page.get_by_label("Your password (to confirm)").fill("not my password")
        page.get_by_role("button", name="Try a sign-in").click()
        expect(page.locator("#try-corp-error")).to_be_visible()
        shots(page, "oidc-upstream", "admin-try-refused")
        page.get_by_label("Your password (to confirm)").fill(PASSWORD)
        page.get_by_role("button", name="Try a sign-in").click()
        page.wait_for_url(f"{served.url}/login/oidc/corp/callback*", timeout=TIMEOUT_MS)
        expect(page.locator("h1")).to_have_text("Trial sign-in with Corp SSO")
        expect(page.locator("[aria-current=page]")).to_have_text("Sign-in providers")
        expect(page.locator("main")).to_contain_text("u-1001")
        expect(page.locator("main")).to_contain_text("a new account would be created")
        shots(page, "oidc-upstream", "admin-trial")

        upstream_server.bad_signature = True
        page.get_by_role("link", name="Back to the sign-in providers").click()
        page.get_by_label("Your password (to confirm)").fill(PASSWORD)
        page.get_by_role("button", name="Try a sign-in").click()
        page.wait_for_url(f"{served.url}/login/oidc/corp/callback*", timeout=TIMEOUT_MS)
        expect(page.get_by_role("alert")).to_contain_text("bad_id_token")
        shots(page, "oidc-upstream", "admin-trial-failed")
        page.goto(f"{served.url}/account")
        expect(page.locator("main")).to_contain_text("root")
    finally:
        context.close()
    with served.app.app_context():
        assert [u.username for u in db.session.scalars(select(User))] == ["root"]
