"""Same-site `next` only, CSRF on every form, security headers, error pages."""

from __future__ import annotations

import re

import pytest
from werkzeug.exceptions import Forbidden, TooManyRequests

from conftest import PASSWORD, csrf_from, https_client
from identity.extensions import db
from identity.models import User
from identity.security import safe_next

EVIL = [
    "//evil.example",
    "///evil.example",
    "////evil.example/x",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "https://evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,x",
    " /\t/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/%09/evil.example",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%255Cevil.example",
    "/%252F%252Fevil.example",
    "evil.example",
    "account",
    "",
    None,
    "/%25252525252525252F%2F",
    "/" + "a" * 3000,
    "/\x00/evil",
    "/a\r\nSet-Cookie:x=1",
]
SAFE = [
    ("/account", "/account"),
    ("/account?tab=apps#x", "/account?tab=apps#x"),
    (
        "/authorize?client_id=a&scope=openid%20profile&redirect_uri=https%3A%2F%2Fapp.example%2Fcb",
        "/authorize?client_id=a&scope=openid%20profile&redirect_uri=https%3A%2F%2Fapp.example%2Fcb",
    ),
    ("/a/b/../c", "/a/b/../c"),
    ("/caf%C3%A9?q=%2F%2F", "/caf%C3%A9?q=%2F%2F"),
]


@pytest.mark.parametrize("target", EVIL)
def test_safe_next_rejects_leaving_the_site(target):
    assert safe_next(target) is None


@pytest.mark.parametrize("target,expected", SAFE)
def test_safe_next_keeps_local_paths(target, expected):
    assert safe_next(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "/%2F%2Fevil.example",
        "/\t/evil.example",
    ],
)
def test_login_never_redirects_off_site(browser, user, target):
    r = browser.login(next=target)
    assert r.status_code == 302
    assert r.headers["Location"] == "/account"


def test_login_page_drops_unsafe_next_from_its_form(browser):
    html = browser.get("/login?next=//evil.example").get_data(as_text=True)
    assert "evil.example" not in html


def test_security_headers_on_pages(client):
    r = client.get("/login")
    h = r.headers
    csp = h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "same-origin"
    assert h["Strict-Transport-Security"].startswith("max-age=31536000")
    assert h["X-Frame-Options"] == "DENY"
    assert h["Cache-Control"] == "no-store"


def test_no_hsts_over_plain_http(app):
    plain = app.test_client()
    assert "Strict-Transport-Security" not in plain.get("/login").headers


def test_pages_have_no_inline_script_or_style(browser, user):
    pages = ["/login", "/register", "/reset"]
    browser.login()
    pages.append("/account")
    for path in pages:
        html = browser.get(path).get_data(as_text=True)
        # Scripts only from files of this origin (the passkey script): none written inline.
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
        assert html.count("<script") == len(scripts), path
        assert all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
        assert "style=" not in html and "<style" not in html, path


def test_static_assets_are_served_locally(client):
    html = client.get("/login").get_data(as_text=True)
    assert 'href="/static/idp.css"' in html and "http://" not in html.split("<body")[0]
    with client.get("/static/idp.css") as css:
        assert css.status_code == 200 and css.mimetype == "text/css"


@pytest.mark.parametrize(
    "path,data",
    [
        ("/login", {"username": "alice", "password": PASSWORD}),
        (
            "/register",
            {
                "username": "eve",
                "email": "eve@example.org",
                "password": PASSWORD,
                "confirm": PASSWORD,
            },
        ),
        ("/reset", {"email": "alice@example.org"}),
        ("/logout", {}),
    ],
)
def test_forms_without_csrf_token_are_refused(app, browser, user, path, data):
    r = browser.post(path, data, csrf=False)
    assert r.status_code == 400
    assert "This form has expired or was not sent from this site" in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(User).count() == 1  # nothing was created


def test_csrf_token_from_another_session_is_refused(app, browser, user):
    other = https_client(app)
    foreign = csrf_from(other.get("/login").get_data(as_text=True))
    browser.get("/login")
    r = browser.post("/login", {"username": "alice", "password": PASSWORD, "csrf_token": foreign})
    assert r.status_code == 400


def test_csrf_refuses_cross_site_referer(browser, user):
    token = browser.csrf("/login")
    r = browser.client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        headers={"Referer": "https://evil.example/login"},
    )
    assert r.status_code == 400


def test_change_password_needs_csrf(app, browser, user):
    browser.login()
    r = browser.post(
        "/account/password",
        {"current_password": PASSWORD, "password": "x" * 20, "confirm": "x" * 20},
        csrf=False,
    )
    assert r.status_code == 400
    with app.app_context():
        from identity.passwords import verify_password

        assert verify_password(db.session.get(User, user.id).password_hash, PASSWORD)


@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/account"),
        ("put", "/login"),
        ("delete", "/register"),
        ("get", "/logout"),
        ("post", "/"),
    ],
)
def test_wrong_method_gets_405_page(client, method, path):
    r = getattr(client, method)(path)
    assert r.status_code == 405
    assert "does not accept that kind of request" in r.get_data(as_text=True)
    assert "Allow" in r.headers


@pytest.fixture
def failing_app(app):
    def forbidden():
        raise Forbidden()

    def limited():
        raise TooManyRequests()

    def boom():
        raise RuntimeError("secret internals: /etc/passwd line 42")

    app.add_url_rule("/_test/403", view_func=forbidden)
    app.add_url_rule("/_test/429", view_func=limited)
    app.add_url_rule("/_test/500", view_func=boom)
    return app


@pytest.mark.parametrize(
    "path,code,text,error",
    [
        ("/_test/403", 403, "You are not allowed to do that.", "access_denied"),
        ("/nowhere", 404, "There is nothing at this address.", "not_found"),
        ("/_test/429", 429, "Too many attempts.", "too_many_requests"),
        ("/_test/500", 500, "Something went wrong on our side.", "server_error"),
    ],
)
def test_error_pages_html_and_json(failing_app, path, code, text, error):
    client = failing_app.test_client()
    html = client.get(path, headers={"Accept": "text/html"})
    assert html.status_code == code and html.mimetype == "text/html"
    body = html.get_data(as_text=True)
    assert text in body and "Traceback" not in body and "secret internals" not in body
    js = client.get(path, headers={"Accept": "application/json"})
    assert js.status_code == code and js.mimetype == "application/json"
    assert js.json["error"] == error and text in js.json["error_description"]


def test_400_in_json_for_api_clients(browser):
    r = browser.client.post("/login", data={}, headers={"Accept": "application/json"})
    assert r.status_code == 400 and r.json["error"] == "invalid_request"


def test_500_is_logged_with_detail_but_not_shown(failing_app, caplog):
    r = failing_app.test_client().get("/_test/500")
    assert r.status_code == 500
    assert "secret internals" in caplog.text  # the log has the detail
    assert "secret internals" not in r.get_data(as_text=True)
