"""Which app a sign-in is for: "Sign in to continue to <app>", its host and logo on the login,
second-step and consent pages of a real /authorize request; nothing from a forged one; the
app's logo URI registered from the command line and the admin page (https only)."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from test_admin_console import make_admin
from test_mfa import enrolled, now_code

from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity.extensions import db
from identity.models import Client
from identity.oidc import clients

REDIRECT = "https://wiki.example.org/oidc/callback"
LOGO = "https://static.wiki.example.org/logo.png"
CONTEXT = "to continue to"


def fresh_app(database_url, tmp_path, **settings):
    """Another app on the test database, its tables created (dispose() it after)."""
    from identity.extensions import db as _db

    app = make_app(database_url, tmp_path, **settings)
    with app.app_context():
        _db.create_all()
    return app


@pytest.fixture
def wiki(app) -> str:
    """A registered app with a logo; its client_id."""
    with app.app_context():
        client, _ = clients.create("Team Wiki", [REDIRECT], logo_uri=LOGO)
        return client.client_id


def authorize_query(client_id: str, **extra) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid profile",
        "state": "s1",
        "nonce": "n1",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGV6M_bX9k",
        "code_challenge_method": "S256",
        **extra,
    }
    return "/authorize?" + urlencode(params)


def login_page_for(browser: Browser, client_id: str, **extra):
    """/authorize as an app sends a person there, followed to the login page."""
    r = browser.get(authorize_query(client_id, **extra))
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=")
    return r.headers["Location"], browser.get(r.headers["Location"])


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.get_data(as_text=True)))


def shows_app(page: str, name: str = "Team Wiki") -> bool:
    return f"Sign in {CONTEXT} {name}" in re.sub(r"<[^>]+>", "", page)


def test_login_from_a_real_authorize_request_names_the_app_its_host_and_logo(browser, wiki):
    _, r = login_page_for(browser, wiki)
    page = text(r)
    assert r.status_code == 200
    assert shows_app(page)
    assert "wiki.example.org" in page
    assert f'<img class="app-logo" src="{LOGO}"' in page
    assert 'referrerpolicy="no-referrer"' in page
    # The logo's origin, and only it, is admitted by this page's Content-Security-Policy.
    csp = r.headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://static.wiki.example.org;" in csp
    # A page without the app: the policy is the usual one.
    plain = browser.get("/login").headers["Content-Security-Policy"]
    assert "img-src 'self' data:;" in plain


def test_the_app_is_named_after_a_failed_password_too(browser, user, wiki):
    location, _ = login_page_for(browser, wiki)
    nxt = parse_qs(urlsplit(location).query)["next"][0]
    r = browser.post(
        "/login", {"username": "alice", "password": "wrong", "next": nxt}, token_from=location
    )
    assert r.status_code == 401 and shows_app(text(r))


def test_without_a_logo_no_image_and_no_extra_image_origin(app, browser):
    with app.app_context():
        client, _ = clients.create("Plain App", [REDIRECT])
    _, r = login_page_for(browser, client.client_id)
    assert shows_app(text(r), "Plain App") and "app-logo" not in text(r)
    assert "img-src 'self' data:;" in r.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "forged",
    [
        "/authorize?client_id=no-such-app&redirect_uri=" + quote(REDIRECT, safe=""),
        "/authorize?client_id=" + "x" * 200,
        "/authorize?client_id=%00abc",
        "/authorize?client_id=",
        "/authorize?response_type=code",
        # A registered app's id with an address it never registered: /authorize would refuse.
        "/authorize?client_id={wiki}&redirect_uri=" + quote("https://evil.example/cb", safe=""),
        "/authorize?client_id={wiki}&client_id={wiki}",
        # Not an authorization request, or not on this site.
        "/account?client_id={wiki}",
        "/authorize/x?client_id={wiki}",
        "https://evil.example/authorize?client_id={wiki}",
        "//evil.example/authorize?client_id={wiki}",
    ],
)
def test_a_forged_or_malformed_next_shows_the_plain_login_page(browser, wiki, forged):
    r = browser.get("/login?next=" + quote(forged.format(wiki=wiki), safe=""))
    assert r.status_code == 200
    page = text(r)
    assert CONTEXT not in page and "Team Wiki" not in page and "app-logo" not in page
    assert "<h1>Sign in</h1>" in page


def test_no_name_from_the_query_string_is_ever_shown(browser, wiki):
    """Only the client_id is read: a client_name (or anything else) in the request is not."""
    _, r = login_page_for(browser, wiki, client_name="Your Bank", logo_uri="https://evil.example/x")
    page = text(r)
    shown = re.sub(r"<[^>]+>", "", page)  # what the page says (the request rides in `next`)
    assert shows_app(page) and "Your Bank" not in shown and "evil.example" not in shown
    assert "<img" not in page.replace('<img class="app-logo" src="' + LOGO, "")
    assert "evil.example" not in r.headers["Content-Security-Policy"]


def test_an_app_with_one_redirect_uri_is_named_without_one_in_the_request(browser, wiki):
    nxt = "/authorize?" + urlencode({"client_id": wiki, "response_type": "code"})
    page = text(browser.get("/login?next=" + quote(nxt, safe="")))
    assert shows_app(page) and "wiki.example.org" in page


def test_the_second_step_names_the_app(app, browser, user, wiki):
    secret, _ = enrolled(app)
    location, _ = login_page_for(browser, wiki)
    nxt = parse_qs(urlsplit(location).query)["next"][0]
    r = browser.post(
        "/login", {"username": "alice", "password": PASSWORD, "next": nxt}, token_from=location
    )
    assert r.status_code == 302 and r.headers["Location"] == "/login/second-factor"
    page = text(browser.get("/login/second-factor"))
    assert "One more step to continue to Team Wiki" in re.sub(r"<[^>]+>", "", page)
    assert "wiki.example.org" in page and f'src="{LOGO}"' in page
    # The code goes on to the app's request, then consent, which shows the host too.
    r = browser.post("/login/second-factor", {"code": now_code(secret, 1)})
    assert r.status_code == 303 and r.headers["Location"].startswith("/authorize?")
    consent = browser.get(r.headers["Location"])
    page = text(consent)
    assert "Allow Team Wiki to sign you in?" in page
    assert "wiki.example.org" in page and f'src="{LOGO}"' in page
    assert "https://static.wiki.example.org" in consent.headers["Content-Security-Policy"]


def test_forced_enrolment_names_the_app(database_url, tmp_path, wiki, app):
    """IDP_MFA_REQUIRED=all: the authenticator set up during an app's sign-in says for which."""
    strict = fresh_app(database_url, tmp_path, MFA_REQUIRED="all")
    with strict.app_context():
        from identity.auth import accounts

        accounts.create_local("dora", "dora@example.org", PASSWORD)
    browser = Browser(https_client(strict))
    location, _ = login_page_for(browser, wiki)
    nxt = parse_qs(urlsplit(location).query)["next"][0]
    browser.post(
        "/login", {"username": "dora", "password": PASSWORD, "next": nxt}, token_from=location
    )
    page = text(browser.get("/login/second-factor/enrol"))
    dispose(strict)
    assert "Set up an authenticator app to continue to Team Wiki" in re.sub(r"<[^>]+>", "", page)


def test_login_page_has_one_or_separator(database_url, tmp_path):
    """Passkey button and provider buttons follow one "or", with providers configured or not."""
    social = fresh_app(
        database_url,
        tmp_path,
        GOOGLE_OAUTH_CLIENT_ID="id",
        GOOGLE_OAUTH_CLIENT_SECRET="secret",
        FACEBOOK_OAUTH_CLIENT_ID="id",
        FACEBOOK_OAUTH_CLIENT_SECRET="secret",
    )
    page = https_client(social).get("/login").get_data(as_text=True)
    dispose(social)
    assert page.count('class="or"') == 1
    # Before the passkey box, which JavaScript shows: without it, "or" leads to the buttons.
    assert (
        page.index('class="or"')
        < page.index('data-passkey="signin"')
        < page.index("Continue with Google")
    )


def test_login_page_without_providers_keeps_its_or_in_the_passkey_box(browser):
    page = browser.get("/login").get_data(as_text=True)
    assert page.count('class="or"') == 1
    box = page[page.index('data-passkey="signin"') :]
    assert box.index('class="or"') < box.index("</div>")  # hidden with the box without WebAuthn


# -- registering the logo -------------------------------------------------------------------


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["client", *args])


def test_cli_sets_changes_and_removes_a_logo_uri(app):
    r = cli(app, "create", "--name", "Wiki", "--redirect-uri", REDIRECT, "--logo-uri", LOGO)
    assert r.exit_code == 0, r.output
    assert re.search(r"^logo_uri +" + re.escape(LOGO) + "$", r.output, re.M)
    other = "https://cdn.example.org/wiki.svg"
    r = cli(app, "update", "Wiki", "--logo-uri", other)
    assert r.exit_code == 0 and "changed: logo_uri" in r.output
    r = cli(app, "update", "Wiki", "--no-logo-uri")
    assert r.exit_code == 0 and "changed: logo_uri" in r.output
    with app.app_context():
        client = db.session.scalar(db.select(Client).where(Client.name == "Wiki"))
        assert client.as_dict()["logo_uri"] is None


@pytest.mark.parametrize(
    "bad",
    [
        "http://wiki.example.org/logo.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "//wiki.example.org/logo.png",
        "/static/logo.png",
        "https://user@wiki.example.org/logo.png",
        "https://wiki.example.org/a logo.png",
        'https://wiki.example.org/"onerror=x',
        "https://wiki.example.org:99999/logo.png",
        "https://" + "a" * 2000 + ".org/",
    ],
)
def test_cli_refuses_a_logo_uri_that_is_not_https_in_one_line(app, bad):
    r = cli(app, "create", "--name", "Wiki", "--redirect-uri", REDIRECT, "--logo-uri", bad)
    assert r.exit_code != 0 and "--logo-uri" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    with app.app_context():
        assert db.session.scalar(db.select(Client)) is None


def test_cli_refuses_logo_and_no_logo_together(app, wiki):
    r = cli(app, "update", "Team Wiki", "--logo-uri", LOGO, "--no-logo-uri")
    assert r.exit_code != 0 and "use one of them" in r.output


def test_admin_page_sets_a_logo_and_puts_a_bad_one_on_its_field(app, browser, wiki):
    make_admin(app)
    assert browser.login("root").status_code == 302
    path = f"/admin/apps/{wiki}"
    page = browser.get(path).get_data(as_text=True)
    assert f'value="{LOGO}"' in page
    form = {
        "name": "Team Wiki",
        "redirect_uris": REDIRECT,
        "scopes": ["openid", "profile", "email"],
        "subject_type": "public",
        "admin_password": PASSWORD,
    }
    r = browser.post(path, {**form, "logo_uri": "http://wiki.example.org/logo.png"})
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    field = page[page.index('id="logo_uri"') :]
    assert "must be an https:// URI" in field[: field.index("</div>")]
    new = "https://cdn.example.org/wiki.svg"
    r = browser.post(path, {**form, "logo_uri": new})
    assert r.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(Client)).as_dict()["logo_uri"] == new
