"""The admin page for upstream OpenID providers (/admin/upstreams): what is configured, the
redirect URI to register, and a live check of discovery and keys against a real upstream."""

from __future__ import annotations

import pytest
from test_admin_console import make_admin


@pytest.fixture
def app_overrides(upstream, upstream_entry):
    return upstream.app_settings(**upstream_entry)


@pytest.fixture
def admin(app, browser):
    make_admin(app)
    assert browser.login("root").status_code == 302
    return browser


def text(r) -> str:
    return r.get_data(as_text=True)


def test_signed_out_and_non_admins_are_kept_out(app, browser, user):
    assert browser.get("/admin/upstreams").headers["Location"] == "/login?next=/admin/upstreams"
    browser.login()
    assert browser.get("/admin/upstreams").status_code == 403
    r = browser.post("/admin/upstreams/corp/check", token_from="/account")
    assert r.status_code == 403


def test_the_page_shows_each_upstream_and_never_its_secret(admin, upstream):
    html = text(admin.get("/admin/upstreams"))
    assert 'href="/admin/upstreams" aria-current="page"' in html
    assert "Corp SSO" in html and upstream.issuer in html and "idp-downstream" in html
    assert "https://idp.test/login/oidc/corp/callback" in html
    assert upstream.secret not in html
    assert "/op/.well-known/openid-configuration" not in upstream.requests  # nothing fetched


def test_check_reads_discovery_and_keys_now(app, admin, upstream):
    r = admin.post("/admin/upstreams/corp/check", token_from="/admin/upstreams")
    assert r.status_code == 200
    html = text(r)
    assert "all is well" in html and upstream.key.kid in html
    assert f"{upstream.issuer}/token" in html
    assert 'href="/admin/upstreams" aria-current="page"' in html
    assert upstream.requests.count("/op/jwks") == 1
    assert upstream.secret not in html


def test_a_failed_check_says_what_is_wrong(app, admin, upstream):
    upstream.discovery_issuer = "https://evil.example/op"
    r = admin.post("/admin/upstreams/corp/check", token_from="/admin/upstreams")
    assert r.status_code == 502
    html = text(r)
    assert (
        "The check failed: <code>wrong_issuer</code>" in html and "https://evil.example/op" in html
    )
    assert "Error: Sign-in providers" in html


def test_bad_requests(admin, upstream):
    assert (
        admin.post("/admin/upstreams/nope/check", token_from="/admin/upstreams").status_code == 404
    )
    assert admin.post("/admin/upstreams/corp/check", csrf=False).status_code == 400
    assert "/op/.well-known/openid-configuration" not in upstream.requests


@pytest.mark.parametrize("upstream_entry", [{"enabled": False}])
def test_no_upstream(admin, upstream):
    assert "No OpenID Connect provider is configured" in text(admin.get("/admin/upstreams"))
