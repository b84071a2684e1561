"""Headless Chromium over real HTTPS: a branded service (name, logo, accent) and an app's
sign-in that names the app, its host and its logo, both logos served from another HTTPS
origin that the Content-Security-Policy admits; screenshots (desktop, phone, light, dark) in
test-artifacts/brand/ for a human to look at."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask, Response
from playwright.sync_api import Page, expect
from test_browser import DESKTOP, PHONE, launch, playwright, shots, watch_csp  # noqa: F401

from conftest import PASSWORD, dispose, make_app
from identity import brand, certs
from identity.auth import accounts
from identity.extensions import db
from identity.oidc import clients
from servers import https_server, nss_home

pytestmark = pytest.mark.browser

ACCENT = "#12a594"  # a teal too light for text on the light theme: it is darkened there
BRAND_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="8" fill="#12a594"/>'
    '<path d="M9 23 16 8l7 15h-4l-3-7-3 7z" fill="#fff"/></svg>'
)
APP_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 48 48">'
    '<rect width="48" height="48" fill="#f5f0e6"/>'
    '<path d="M10 12h28v26H10z" fill="#8a5a2b"/><path d="M14 16h20v3H14zm0 6h20v3H14zm0 6h14v3H14z"'
    ' fill="#f5f0e6"/></svg>'
)


def _logos() -> Flask:
    """Another origin (another port) serving the two logos, as a CDN would."""
    app = Flask("logos")

    @app.get("/<name>.svg")
    def logo(name: str):
        body = {"brand": BRAND_SVG, "app": APP_SVG}.get(name)
        return Response(body, mimetype="image/svg+xml") if body else ("", 404)

    return app


@pytest.fixture(scope="module")
def idp(database_url, tmp_path_factory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("brand-idp")
    with https_server(lambda port: _logos(), tmp / "certs") as (_, logo_port):
        logos = f"https://localhost:{logo_port}"

        def build(port: int):
            app = make_app(
                database_url,
                tmp,
                ISSUER=f"https://localhost:{port}",
                BRAND_NAME="Acme Corp",
                BRAND_LOGO_URL=f"{logos}/brand.svg",
                BRAND_ACCENT=ACCENT,
                # Buttons only (never pressed here): the page's one "or" above them.
                GOOGLE_OAUTH_CLIENT_ID="id",
                GOOGLE_OAUTH_CLIENT_SECRET="secret",
                FACEBOOK_OAUTH_CLIENT_ID="id",
                FACEBOOK_OAUTH_CLIENT_SECRET="secret",
            )
            with app.app_context():
                db.create_all()
                accounts.create_local("grace", "grace@example.org", PASSWORD)
            return app

        with https_server(build, tmp / "certs") as (app, port):
            yield SimpleNamespace(
                app=app,
                url=f"https://localhost:{port}",
                logos=logos,
                ca=tmp / "certs" / certs.CA_CERT,
            )
        dispose(app)


@pytest.fixture(scope="module")
def home(idp, tmp_path_factory) -> Path:
    return nss_home(tmp_path_factory.mktemp("home-brand"), idp.ca)


class _Callback(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>App</title><h1>Back at the app</h1>")

    def log_message(self, *args):
        pass


def loaded(page: Page, selector: str) -> bool:
    return page.locator(selector).evaluate("img => img.complete && img.naturalWidth > 0")


def rgb(colour: str) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def no_sideways_scroll(page: Page) -> None:
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(DESKTOP)


def test_a_branded_sign_in_to_an_app_names_the_app_with_its_logo_and_host(
    idp,
    home,
    playwright,  # noqa: F811
):
    callback = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    threading.Thread(target=callback.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{callback.server_address[1]}"
    redirect_uri = f"http://{host}/callback"
    with idp.app.app_context():
        registered, _ = clients.create("Team Wiki", [redirect_uri], logo_uri=f"{idp.logos}/app.svg")
    session = OAuth2Session(
        registered.client_id,
        scope="openid profile email",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    url, state = session.create_authorization_url(f"{idp.url}/authorize", code_verifier="v" * 64)
    context = launch(playwright, home, "profile-brand", viewport=DESKTOP)
    try:
        page = context.new_page()
        csp = watch_csp(page)

        # The plain login page: brand name, logo and accent; one "or" above the buttons.
        page.goto(f"{idp.url}/login")
        expect(page).to_have_title("Sign in · Acme Corp")
        expect(page.locator("header .brand")).to_have_text("Acme Corp")
        assert loaded(page, "img.brand-logo")
        button = page.get_by_role("button", name="Sign in", exact=True)
        light = brand.readable(ACCENT, brand.LIGHT_BACKGROUND)
        assert light != ACCENT  # too light on the light theme: darkened
        expect(button).to_have_css("background-color", rgb(light))
        page.emulate_media(color_scheme="dark")
        expect(button).to_have_css("background-color", rgb(ACCENT))  # readable as it is
        page.emulate_media(color_scheme="light")
        expect(page.locator("p.or")).to_have_count(1)
        shots(page, "brand", "login")
        no_sideways_scroll(page)

        # The app sends the person here: its name, its host and its logo.
        page.goto(url)
        expect(page).to_have_url(re.compile(r"/login\?next="))
        expect(page.get_by_role("heading", name="Sign in to continue to Team Wiki")).to_be_visible()
        expect(page.locator(".app-host")).to_contain_text(host)
        assert loaded(page, "img.app-logo")
        assert page.locator("img.app-logo").get_attribute("referrerpolicy") == "no-referrer"
        shots(page, "brand", "login-app")
        no_sideways_scroll(page)

        page.get_by_label("Username or e-mail").fill("grace")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        button.click()
        expect(page.get_by_role("heading", name="Allow Team Wiki to sign you in?")).to_be_visible()
        expect(page.locator(".app-host")).to_contain_text(host)
        assert loaded(page, "img.app-logo")
        shots(page, "brand", "consent-app")
        no_sideways_scroll(page)
        page.get_by_role("button", name="Allow").click()
        expect(page.get_by_role("heading", name="Back at the app")).to_be_visible()
        assert f"state={state}" in page.url
        assert csp == [], f"Content-Security-Policy violations: {csp}"
    finally:
        context.close()
        callback.shutdown()
        callback.server_close()
