"""Headless Chromium against the app over real HTTPS: the local CA is trusted through NSS
(never by ignoring certificate errors), then a person registers, signs out and signs in.
Screenshots of the pages land in test-artifacts/ for a human to look at; with
IDP_SCREENSHOTS=docs/screenshots (`make screenshots`) the tests marked `screenshots` also
save the pages the README shows there, so those images stay current."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from authlib.integrations.requests_client import OAuth2Session
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from test_ldap import ldap_settings
from test_social import social_settings

from conftest import dispose, make_app
from identity import certs
from identity.extensions import db
from identity.oidc import clients
from servers import https_server, nss_home, require_certutil

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# Where `make screenshots` saves the documentation's images (unset: nowhere), and their
# size: one window's worth at a width the README shows without scaling much.
SCREENSHOTS = os.environ.get("IDP_SCREENSHOTS")
DOCS_VIEWPORT = {"width": 1100, "height": 760}
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Not a name the test directory has: registration refuses those (docs/security.md).
USERNAME, EMAIL = "hedy", "hedy@example.org"
PASSWORD = "a few unrelated words here"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def idp(
    database_url, tmp_path_factory, slapd_directory, provider_emulator
) -> Iterator[SimpleNamespace]:
    """The app on https://localhost:<free port>, with empty tables, its CA file, and the
    test directory as its LDAP server."""
    tmp = tmp_path_factory.mktemp("https-idp")
    certs_dir = tmp / "certs"

    def build(port: int):
        app = make_app(
            database_url,
            tmp,
            ISSUER=f"https://localhost:{port}",
            **ldap_settings(slapd_directory),
            **social_settings(provider_emulator),
        )
        with app.app_context():
            db.create_all()
        return app

    with https_server(build, certs_dir) as (app, port):
        yield SimpleNamespace(
            app=app,
            url=f"https://localhost:{port}",
            ca=certs_dir / certs.CA_CERT,
            directory=slapd_directory,
            emulator=provider_emulator,
        )
    dispose(app)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: apt-get install chromium. "
            "Browser tests fail rather than skip without it.",
            pytrace=False,
        )
    try:
        require_certutil()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    with sync_playwright() as p:
        yield p


def launch(playwright: Playwright, home: Path, profile: str, **options) -> BrowserContext:
    """Chromium with its own HOME (hence its own NSS database) and profile directory."""
    context = playwright.chromium.launch_persistent_context(
        str(home / profile),
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        env={**os.environ, "HOME": str(home)},
        timeout=TIMEOUT_MS,
        **options,
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture(scope="module")
def trusted_home(idp, tmp_path_factory) -> Path:
    home = nss_home(tmp_path_factory.mktemp("home-trusting"), idp.ca)
    # The provider emulator has a CA of its own: the browser visits it during the dance.
    subprocess.run(
        [
            require_certutil(),
            "-d",
            f"sql:{home}/.pki/nssdb",
            "-A",
            "-t",
            "C,,",
            "-n",
            "provider-emulator-ca",
            "-i",
            idp.emulator.ca_file,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return home


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def shot(page: Page, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def shots(page: Page, folder: str, name: str) -> None:
    """The page as it is, on a desktop and a phone, light and dark, saved as
    test-artifacts/<folder>/<name>-<size>-<scheme>.png to be looked at."""
    where = ARTIFACTS / folder
    where.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    for viewport, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(viewport)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.screenshot(path=str(where / f"{name}-{label}-{scheme}.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(size)


def publish(page: Page, name: str) -> None:
    """With IDP_SCREENSHOTS set, save what a 1100 x 760 window shows of the page as
    <IDP_SCREENSHOTS>/<name>.png (relative to the project), for the documentation."""
    if not SCREENSHOTS:
        return
    folder = ROOT / SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    page.set_viewport_size(DOCS_VIEWPORT)
    page.screenshot(path=str(folder / f"{name}.png"), animations="disabled", caret="hide")
    page.set_viewport_size(size)


def watch_csp(page: Page) -> list[str]:
    """Collects Content-Security-Policy violations that the page reports."""
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return violations


def test_chromium_trusts_the_test_ca_through_nss_and_only_then(
    playwright, idp, trusted_home, tmp_path
):
    # Negative control: the same browser with a fresh NSS database lacking the CA refuses.
    untrusting = nss_home(tmp_path / "home-untrusting", None)
    context = launch(playwright, untrusting, "profile")
    try:
        with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
            context.new_page().goto(f"{idp.url}/login")
    finally:
        context.close()

    context = launch(playwright, trusted_home, "profile-trust-check")
    try:
        page = context.new_page()
        response = page.goto(f"{idp.url}/login")
        assert response is not None and response.status == 200
        tls = response.security_details()
        assert tls is not None, "no TLS details: the page was not loaded over HTTPS"
        assert tls["issuer"] == "Identity local CA", tls
        assert tls["subjectName"] == "localhost", tls
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        context.close()


def test_register_sign_out_sign_in_with_screenshots(playwright, idp, trusted_home, artifacts):
    started = time.monotonic()
    context = launch(playwright, trusted_home, "profile-desktop", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)

        # The login page as a first-time visitor sees it (username field autofocused).
        page.goto(f"{idp.url}/login")
        expect(page.get_by_label("Username or e-mail")).to_be_focused()
        login_png = shot(page, artifacts, "login-desktop")
        page.emulate_media(color_scheme="dark")
        shot(page, artifacts, "login-desktop-dark")
        page.emulate_media(color_scheme="light")

        # Register, first with passwords that differ: the form says so, next to the field.
        page.get_by_role("link", name="Create an account").click()
        expect(page).to_have_url(f"{idp.url}/register")
        page.get_by_label("Username", exact=True).fill(USERNAME)
        page.get_by_label("E-mail address").fill(EMAIL)
        page.get_by_label("New password").fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD + " typo")
        page.get_by_role("button", name="Create account").click()
        confirm = page.get_by_label("Repeat the password")
        expect(page.get_by_text("The two passwords differ.", exact=True)).to_be_visible()
        expect(confirm).to_have_attribute("aria-invalid", "true")
        # The error summary takes focus and links to the field; the title says it failed.
        summary = page.get_by_role("alert")
        expect(summary).to_be_focused()
        expect(page).to_have_title(re.compile(r"^Error: Create an account"))
        summary.get_by_role("link", name="Repeat the password: The two passwords differ.").click()
        expect(confirm).to_be_focused()
        expect(confirm).to_have_accessible_description("The two passwords differ.")
        expect(page.get_by_label("Username", exact=True)).to_have_value(USERNAME)
        shot(page, artifacts, "register-errors-desktop")

        page.get_by_label("New password").fill(PASSWORD)
        confirm.fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page).to_have_url(f"{idp.url}/account")
        expect(page.get_by_role("heading", name="Your account")).to_be_visible()
        expect(page.get_by_role("status")).to_have_text(
            f"Welcome, {USERNAME}. Your account is ready. To verify your e-mail address, "
            f"open the link we sent to {EMAIL}."
        )
        expect(page.locator("#email-status")).to_have_text("(not verified)")
        expect(page.locator("dl.facts")).to_contain_text(USERNAME)
        expect(page.locator("dl.facts")).to_contain_text(EMAIL)
        shot(page, artifacts, "account-desktop")

        # Sign out with the button in the header.
        nav = page.get_by_role("navigation", name="Account")
        expect(nav.get_by_role("link", name=USERNAME)).to_be_visible()
        nav.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{idp.url}/login")
        expect(page.get_by_role("status")).to_have_text("You are signed out.")
        page.goto(f"{idp.url}/account")
        expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)account$"))

        # Sign in with the keyboard only: autofocus, type, Tab through the form, Enter.
        expect(page.get_by_label("Username or e-mail")).to_be_focused()
        page.keyboard.type(EMAIL)
        page.keyboard.press("Tab")
        expect(page.get_by_label("Password", exact=True)).to_be_focused()
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Tab")
        expect(page.get_by_label("Keep me signed in on this device")).to_be_focused()
        page.keyboard.press("Tab")
        expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_focused()
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{idp.url}/account")
        expect(page.locator("dl.facts")).to_contain_text(USERNAME)

        # The remaining pages, signed out.
        page.get_by_role("navigation", name="Account").get_by_role(
            "button", name="Sign out"
        ).click()
        expect(page).to_have_url(f"{idp.url}/login")
        page.goto(f"{idp.url}/reset")
        expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
        shot(page, artifacts, "reset-desktop")
        response = page.goto(f"{idp.url}/does-not-exist")
        assert response is not None and response.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        shot(page, artifacts, "error-404-desktop")
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()

    phone = launch(
        playwright,
        trusted_home,
        "profile-phone",
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        page = phone.new_page()
        csp = watch_csp(page)
        page.goto(f"{idp.url}/login")
        expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
        shot(page, artifacts, "login-phone")
        page.goto(f"{idp.url}/register")
        page.get_by_label("Username", exact=True).fill("x")
        page.get_by_label("E-mail address").fill("not-an-address")
        page.get_by_label("New password").fill("short")
        page.get_by_label("Repeat the password").fill("shorter")
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_text("The two passwords differ.", exact=True)).to_be_visible()
        shot(page, artifacts, "register-errors-phone")
        # No sideways scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        phone.close()

    assert login_png.is_file() and login_png.stat().st_size > 0, login_png
    print(f"browser flow took {time.monotonic() - started:.1f}s; screenshots in {artifacts}")


def test_admin_runs_the_directory_binding_test(playwright, idp, trusted_home, artifacts):
    """A directory administrator signs in and tests a binding from the admin page."""
    d = idp.directory
    context = launch(playwright, trusted_home, "profile-admin", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)
        page.goto(f"{idp.url}/admin/ldap/test")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.get_by_label("Username or e-mail").fill("ada")
        page.get_by_label("Password", exact=True).fill(d.passwords["ada"])
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page).to_have_url(f"{idp.url}/admin/ldap/test")
        expect(page.get_by_text("set (never shown)")).to_be_visible()
        page.get_by_label("Username to look up (optional)").fill("grace")
        page.get_by_label("That user's password (optional)").fill(d.passwords["grace"])
        page.get_by_role("button", name="Run the test").click()
        expect(page.get_by_role("heading", name="All steps passed")).to_be_visible()
        expect(page.get_by_role("heading", name="All steps passed")).to_be_focused()
        assert page.locator("table.steps tbody tr").count() == 7
        shot(page, artifacts, "admin-ldap-test-desktop")
        page.get_by_label("That user's password (optional)").fill("wrong password")
        page.get_by_label("Username to look up (optional)").fill("grace")
        page.get_by_role("button", name="Run the test").click()
        expect(page.get_by_role("heading", name="Some steps failed")).to_be_visible()
        expect(page.get_by_text("49 invalidCredentials")).to_be_visible()
        page.set_viewport_size(PHONE)
        shot(page, artifacts, "admin-ldap-test-phone")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert d.bind_password not in page.content()
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()


# The provider buttons' backgrounds, as each brand asks, in light and dark mode alike.
BRAND_BACKGROUNDS = {
    "google": "rgb(255, 255, 255)",
    "facebook": "rgb(8, 102, 255)",
    "twitter": "rgb(0, 0, 0)",
    "github": "rgb(36, 41, 47)",
}


@pytest.mark.screenshots
def test_sign_in_with_google_through_the_emulator(playwright, idp, trusted_home, artifacts):
    """The whole dance in a real browser: our button, the provider, our callback."""
    context = launch(playwright, trusted_home, "profile-social", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)
        page.goto(f"{idp.url}/login")
        for label in ("Google", "Facebook", "X", "GitHub"):
            expect(page.get_by_role("link", name=f"Continue with {label}")).to_be_visible()
        # Each button carries its provider's mark (inline SVG, no request) and colours.
        for name, background in BRAND_BACKGROUNDS.items():
            button = page.locator(f"a.provider-{name}")
            expect(button.locator("svg.mark")).to_be_visible()
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                color = button.evaluate("b => getComputedStyle(b).backgroundColor")
                assert color == background, (name, scheme, color)
        page.emulate_media(color_scheme="light")
        shot(page, artifacts, "login-with-providers-desktop")
        shots(page, "connectors", "login")
        publish(page, "login")
        page.get_by_role("link", name="Continue with Google").click()
        expect(page).to_have_url(f"{idp.url}/account")
        expect(page.locator("dl.facts")).to_contain_text("grace@gmail.test")
        expect(page.get_by_role("heading", name="How you sign in")).to_be_visible()
        expect(page.get_by_text("Google", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Connect Facebook")).to_be_visible()
        connect_github = page.get_by_role("button", name="Connect GitHub")
        expect(connect_github.locator("svg.mark")).to_be_visible()
        shot(page, artifacts, "account-social-desktop")
        shots(page, "connectors", "account")
        publish(page, "account")
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()


class _Callback(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>App</title><h1>Back at the app</h1>")

    def log_message(self, *args):
        pass


@pytest.mark.screenshots
def test_an_app_asks_for_consent_and_the_person_takes_it_back(
    playwright, idp, trusted_home, artifacts
):
    """SSO as a person sees it: an app sends them here, they sign in, see what the app asks
    for, allow it, land back at the app; later they remove its access from their account."""
    d = idp.directory
    callback = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    threading.Thread(target=callback.serve_forever, daemon=True).start()
    redirect_uri = f"http://127.0.0.1:{callback.server_address[1]}/callback"
    with idp.app.app_context():
        registered, _ = clients.create(
            "Team Wiki", [redirect_uri], scopes=["openid", "profile", "email", "groups"]
        )
        client_id = registered.client_id
    session = OAuth2Session(
        client_id,
        scope="openid profile email groups",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    url, state = session.create_authorization_url(f"{idp.url}/authorize", code_verifier="v" * 64)
    context = launch(playwright, trusted_home, "profile-consent", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)
        page.goto(url)
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.get_by_label("Username or e-mail").fill("ada")
        page.get_by_label("Password", exact=True).fill(d.passwords["ada"])
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.get_by_role("heading", name="Allow Team Wiki to sign you in?")).to_be_visible()
        expect(page.get_by_text("The groups you belong to")).to_be_visible()
        expect(page.get_by_role("button", name="Allow")).to_be_focused()
        shot(page, artifacts, "consent-desktop")
        publish(page, "consent")
        page.set_viewport_size(PHONE)
        shot(page, artifacts, "consent-phone")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.get_by_role("button", name="Allow").click()
        expect(page.get_by_role("heading", name="Back at the app")).to_be_visible()
        assert f"state={state}" in page.url and "code=" in page.url

        page.set_viewport_size(DESKTOP)
        page.goto(f"{idp.url}/account")
        apps = page.locator("#apps + ul")
        expect(apps.get_by_text("Team Wiki")).to_be_visible()
        shot(page, artifacts, "account-apps")
        page.get_by_role("button", name="Remove access for Team Wiki").click()
        expect(page.get_by_text("The app no longer has access to your account.")).to_be_visible()
        expect(page.get_by_text("No app has asked for access yet.")).to_be_visible()
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()
        callback.shutdown()
        callback.server_close()


def test_admin_registers_an_app_and_rotates_the_signing_keys(
    playwright, idp, trusted_home, artifacts
):
    """The apps and signing keys pages with a keyboard and at phone width: a refused form
    focuses its error summary, the secret is shown once and works, nothing scrolls sideways."""
    import requests

    d = idp.directory
    context = launch(playwright, trusted_home, "profile-admin-apps", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)

        def no_sideways_scroll(name: str) -> None:
            page.set_viewport_size(PHONE)
            shot(page, artifacts, f"{name}-phone")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{name}: {width}px wide at {PHONE['width']}px"
            page.set_viewport_size(DESKTOP)

        page.goto(f"{idp.url}/admin/apps")
        page.get_by_label("Username or e-mail").fill("ada")
        page.get_by_label("Password", exact=True).fill(d.passwords["ada"])
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page).to_have_url(f"{idp.url}/admin/apps")
        with idp.app.app_context():
            clients.create(
                "Intranet portal",
                ["https://intranet.example.org/oidc/callback", "http://localhost:8080/callback"],
            )
        page.reload()
        expect(page.get_by_role("heading", name="Apps", exact=True)).to_be_visible()
        expect(page.get_by_role("link", name="Intranet portal")).to_be_visible()
        shot(page, artifacts, "admin-apps-desktop")
        no_sideways_scroll("admin-apps")

        # Register, keyboard only, with a redirect URI that is refused.
        page.get_by_role("link", name="Register an app").click()
        expect(page).to_have_url(f"{idp.url}/admin/apps/new")
        expect(page.get_by_label("Name", exact=True)).to_be_focused()
        page.keyboard.type("Reports")
        page.keyboard.press("Tab")
        expect(page.get_by_label("Redirect URIs, one per line", exact=True)).to_be_focused()
        page.keyboard.type("http://reports.example.org/callback")
        page.keyboard.press("Tab")
        expect(page.get_by_role("checkbox", name=re.compile("^authorization_code"))).to_be_focused()
        page.get_by_role("checkbox", name=re.compile("^client_credentials")).check()
        page.get_by_label("Your password (to confirm)").fill(d.passwords["ada"])
        page.get_by_role("button", name="Register the app").click()
        summary = page.get_by_role("alert")
        expect(summary).to_be_focused()
        expect(page).to_have_title(re.compile(r"^Error: Register an app"))
        uris = page.get_by_label("Redirect URIs, one per line", exact=True)
        expect(uris).to_have_attribute("aria-invalid", "true")
        expect(uris).to_have_value("http://reports.example.org/callback")
        expect(page.get_by_role("checkbox", name=re.compile("^client_credentials"))).to_be_checked()
        shot(page, artifacts, "admin-app-new-error-desktop")
        no_sideways_scroll("admin-app-new-error")
        summary.get_by_role("link", name=re.compile("^Redirect URIs")).click()
        expect(uris).to_be_focused()
        page.keyboard.press("Control+A")
        page.keyboard.type("https://reports.example.org/callback")
        # The password is asked again: a refused form never sends it back.
        page.get_by_label("Your password (to confirm)").fill(d.passwords["ada"])
        page.get_by_role("button", name="Register the app").click()

        # The secret, once; the heading takes focus; the secret gets a token.
        heading = page.get_by_role("heading", name="Registered Reports")
        expect(heading).to_be_focused()
        secret = page.locator("code.secret").inner_text()
        client_id = page.locator("dl.facts dd code").first.inner_text()
        shot(page, artifacts, "admin-app-secret-desktop")
        no_sideways_scroll("admin-app-secret")
        token = requests.post(
            f"{idp.url}/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            verify=str(idp.ca),
            timeout=10,
        )
        assert token.status_code == 200, token.text
        page.get_by_role("link", name="Go to Reports").click()
        expect(page.get_by_role("heading", name="Reports", exact=True)).to_be_visible()
        assert secret not in page.content()
        shot(page, artifacts, "admin-app-detail-desktop")
        no_sideways_scroll("admin-app-detail")

        # Signing keys: a wrong password is refused with the summary focused, then rotate.
        page.get_by_role("navigation", name="Administration").get_by_role(
            "link", name="Signing keys"
        ).click()
        expect(page.get_by_role("heading", name="Signing keys", exact=True)).to_be_visible()
        shot(page, artifacts, "admin-keys-desktop")
        password = page.get_by_label("Your password (to confirm)")
        password.fill("not the password")
        password.press("Enter")
        expect(page.get_by_role("alert")).to_be_focused()
        expect(page.get_by_text("That is not your password.", exact=True)).to_be_visible()
        page.get_by_label("Your password (to confirm)").fill(d.passwords["ada"])
        page.get_by_role("button", name="Rotate the signing keys").click()
        expect(page.get_by_role("status")).to_contain_text("Signing keys rotated:")
        expect(page.locator("table.keys").get_by_text("retired", exact=True).first).to_be_visible()
        shot(page, artifacts, "admin-keys-rotated-desktop")
        no_sideways_scroll("admin-keys")
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()


@pytest.mark.screenshots
def test_admin_finds_a_user_ends_their_sessions_and_reads_the_audit_log(
    playwright, idp, trusted_home, artifacts
):
    """The users list, a user's page and the audit log with a keyboard and at phone width:
    labelled fields, a refused password focuses the error summary, nothing scrolls sideways."""
    from identity.auth import accounts
    from identity.models import User

    d = idp.directory
    with idp.app.app_context():
        people = [
            ("margaret", "margaret.hamilton@apollo-guidance.example.org", "Margaret Hamilton"),
            ("linus", "linus@example.org", None),
            ("barbara-liskov-with-a-rather-long-username", "barbara@example.org", "B. Liskov"),
        ]
        for username, email, name in people:
            if User.find(username, by_email=False) is None:
                accounts.create_local(username, email, "a long enough password", name=name)
        linus = User.find("linus", by_email=False)
        linus.disabled = True
        db.session.commit()

    context = launch(playwright, trusted_home, "profile-admin-users", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)

        def no_sideways_scroll(name: str) -> None:
            page.set_viewport_size(PHONE)
            shot(page, artifacts, f"{name}-phone")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{name}: {width}px wide at {PHONE['width']}px"
            page.set_viewport_size(DESKTOP)

        page.goto(f"{idp.url}/admin/users")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.get_by_label("Username or e-mail").fill("ada")
        page.get_by_label("Password", exact=True).fill(d.passwords["ada"])
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page).to_have_url(f"{idp.url}/admin/users")
        expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
        table = page.locator("table.users")
        expect(table.get_by_role("link", name="margaret")).to_be_visible()
        expect(table.get_by_text("Disabled", exact=True)).to_be_visible()
        shot(page, artifacts, "admin-users-desktop")
        publish(page, "admin-users")
        no_sideways_scroll("admin-users")

        # Create a user: a refused form focuses its summary; the choice is a labelled group.
        page.get_by_role("link", name="Create a user").click()
        expect(page.get_by_label("Username", exact=True)).to_be_focused()
        page.keyboard.type("margaret")
        page.get_by_label("Set a password now, and tell them").check()
        page.get_by_label("Password", exact=True).fill("short")
        page.get_by_role("button", name="Create the user").click()
        expect(page.get_by_role("alert")).to_be_focused()
        expect(page).to_have_title(re.compile(r"^Error: Create a user"))
        expect(page.get_by_text("That username is taken. Choose another.").first).to_be_visible()
        expect(page.get_by_role("group", name="How the person gets a password")).to_be_visible()
        shot(page, artifacts, "admin-user-new-error-desktop")
        no_sideways_scroll("admin-user-new-error")
        page.get_by_role("link", name="All users").click()

        # Search with the keyboard: the field is labelled, Enter submits.
        search = page.get_by_label("Search by username, e-mail or name")
        search.focus()
        page.keyboard.type("HAMILTON")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/admin/users\?q=HAMILTON$"))
        expect(table.locator("tbody tr")).to_have_count(1)
        expect(page.get_by_text("1 account matching “HAMILTON”")).to_be_visible()

        # Tab from the search field to the button: the focus ring shows.
        page.get_by_label("Search by username, e-mail or name").focus()
        page.keyboard.press("Tab")
        expect(page.get_by_role("button", name="Search")).to_be_focused()
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Show everyone")).to_be_focused()
        page.keyboard.press("Tab")
        expect(table.get_by_role("link", name="margaret")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="margaret")).to_be_visible()
        expect(page.locator("dl.facts")).to_contain_text("Margaret Hamilton")
        shot(page, artifacts, "admin-user-desktop")
        no_sideways_scroll("admin-user")

        # A dangerous action: the password field has the focus; a wrong one is refused with
        # the error summary focused; the right one ends the sessions.
        page.get_by_role("link", name="End sessions and revoke tokens…").click()
        password = page.get_by_label("Your password (to confirm)")
        expect(password).to_be_focused()
        page.keyboard.type("not my password")
        page.keyboard.press("Enter")
        summary = page.get_by_role("alert")
        expect(summary).to_be_focused()
        expect(page).to_have_title(re.compile(r"^Error: End margaret’s sessions"))
        expect(password).to_have_attribute("aria-invalid", "true")
        shot(page, artifacts, "admin-user-confirm-error-desktop")
        no_sideways_scroll("admin-user-confirm-error")
        summary.get_by_role("link", name=re.compile("^Your password")).click()
        expect(password).to_be_focused()
        page.keyboard.type(d.passwords["ada"])
        page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_contain_text("margaret is signed out everywhere")

        # The audit log: the action is there, with who did it; filters in the query string.
        page.get_by_role("navigation", name="Administration").get_by_role(
            "link", name="Audit log"
        ).click()
        expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
        events = page.locator("table.events")
        expect(events.get_by_text("admin.user_sessions_ended")).to_be_visible()
        expect(events.get_by_text("by=ada via=console")).to_be_visible()
        shot(page, artifacts, "admin-audit-desktop")
        no_sideways_scroll("admin-audit")
        page.get_by_label("Type", exact=True).fill("admin.")
        page.get_by_label("User", exact=True).fill("margaret")
        page.get_by_label("User", exact=True).press("Enter")
        expect(page).to_have_url(re.compile(r"user=margaret"))
        expect(events.locator("tbody tr")).to_have_count(1)
        # A date picker: a day is chosen, not typed; the whole day counts.
        expect(page.get_by_label("From (UTC)")).to_have_attribute("type", "date")
        page.get_by_label("From (UTC)").fill("2000-01-01")
        page.get_by_label("From (UTC)").press("Enter")
        expect(page).to_have_url(re.compile(r"from=2000-01-01"))
        expect(events.locator("tbody tr")).to_have_count(1)
        # A value typed into the address stays on the page, as text, beside its error.
        page.goto(re.sub(r"from=2000-01-01", "from=yesterday", page.url))
        expect(page.get_by_role("alert")).to_be_focused()
        expect(page.get_by_label("From (UTC)")).to_have_value("yesterday")
        expect(page.get_by_role("alert")).to_contain_text("'yesterday' is not a date or time")
        expect(page.get_by_label("From (UTC)")).to_have_attribute("aria-invalid", "true")
        shot(page, artifacts, "admin-audit-error-desktop")
        no_sideways_scroll("admin-audit-error")
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()


def test_an_admin_lands_on_the_overview_at_every_size(playwright, idp, trusted_home, artifacts):
    """A directory admin signs in with no `next` and lands on the console's overview: its
    figures, health and warnings fit a phone and a desktop, light and dark."""
    d = idp.directory
    context = launch(playwright, trusted_home, "profile-admin-overview", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)
        page.goto(f"{idp.url}/login")
        page.get_by_label("Username or e-mail").fill("ada")
        page.get_by_label("Password", exact=True).fill(d.passwords["ada"])
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page).to_have_url(f"{idp.url}/admin/")
        expect(page.get_by_role("heading", name="At a glance")).to_be_visible()
        expect(page.get_by_role("row", name=re.compile(r"^Directory OK"))).to_be_visible()
        expect(page.get_by_text("No SMTP server: password-reset")).to_be_visible()
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                shot(page, artifacts, f"admin-overview-{size}-{scheme}")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{size}: {width}px wide"
        page.emulate_media(color_scheme="light")
        page.set_viewport_size({"width": 960, "height": 800})
        page.goto(f"{idp.url}/admin/audit")
        shot(page, artifacts, "admin-audit-960")
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()


class _FormPostCallback(http.server.BaseHTTPRequestHandler):
    """An app's redirect URI that takes the answer as a POSTed form (form_post)."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.server.posted.append(self.rfile.read(length).decode())
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>App</title><h1>Posted to the app</h1>")

    def log_message(self, *args):
        pass


def test_form_post_answer_is_submitted_by_the_browser_under_the_csp(playwright, idp, trusted_home):
    """response_mode=form_post in a real browser: the page's script file (no inline script,
    which the CSP forbids) posts the code and state to the app, with no CSP violation."""
    d = idp.directory
    callback = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FormPostCallback)
    callback.posted = []
    threading.Thread(target=callback.serve_forever, daemon=True).start()
    redirect_uri = f"http://127.0.0.1:{callback.server_address[1]}/callback"
    with idp.app.app_context():
        registered, _ = clients.create("Form Post App", [redirect_uri], skip_consent=True)
    session = OAuth2Session(
        registered.client_id,
        scope="openid",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    url, state = session.create_authorization_url(
        f"{idp.url}/authorize", code_verifier="v" * 64, response_mode="form_post"
    )
    context = launch(playwright, trusted_home, "form-post", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)
        page.goto(url)
        page.get_by_label("Username or e-mail").fill("ada")
        page.get_by_label("Password", exact=True).fill(d.passwords["ada"])
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.get_by_role("heading", name="Posted to the app")).to_be_visible()
        assert page.url == redirect_uri
        assert len(callback.posted) == 1
        assert "code=" in callback.posted[0] and f"state={state}" in callback.posted[0]
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()
        callback.shutdown()
        callback.server_close()
