"""Facebook, Google, X and GitHub sign-in, walked through the service's real routes against the
provider emulator (a real HTTPS server, see provider_emulator.py)."""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from sqlalchemy import select

from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity.auth import accounts
from identity.extensions import db
from identity.models import LinkedIdentity, User

PROVIDERS = ["google", "facebook", "twitter", "github"]
PROFILE_ENDS = {
    "google": "/oauth2/v3/userinfo",
    "facebook": "/me",
    "twitter": "/2/users/me",
    "github": "/user",
}


def social_settings(emulator, **overrides) -> dict:
    settings = {"SOCIAL_CA_FILE": emulator.ca_file, "SOCIAL_TIMEOUT": 1}
    for p in PROVIDERS:
        key = p.upper()
        client_id, secret = emulator.clients[p]
        urls = emulator.endpoints(p)
        settings.update(
            {
                f"{key}_OAUTH_CLIENT_ID": client_id,
                f"{key}_OAUTH_CLIENT_SECRET": secret,
                f"{key}_AUTHORIZATION_URL": urls["authorization_url"],
                f"{key}_TOKEN_URL": urls["token_url"],
                f"{key}_API_BASE_URL": urls["api_base_url"],
            }
        )
    settings.update(overrides)
    return settings


@pytest.fixture
def app_overrides(emulator):
    return social_settings(emulator)


@pytest.fixture
def user(app, user):
    """alice, who has verified her address: connecting a provider needs it."""
    with app.app_context():
        db.session.get(User, user.id).email_verified = True
        db.session.commit()
    return user


def start(browser: Browser, provider: str, next_url: str | None = None) -> str:
    """Press the provider's button: the URL the service sends the browser to."""
    path = f"/login/{provider}" + (f"?{urlencode({'next': next_url})}" if next_url else "")
    r = browser.get(path)
    assert r.status_code == 302, r.get_data(as_text=True)
    return r.headers["Location"]


def callback_path(url: str) -> str:
    parts = urlsplit(url)
    assert parts.netloc == "idp.test", url  # the redirect URI is the service's (IDP_ISSUER)
    return urlunsplit(("", "", parts.path, parts.query, ""))


def dance(browser: Browser, emulator, provider: str, next_url: str | None = None):
    """The whole redirect dance: our route, the provider's approval, our callback."""
    return browser.get(callback_path(emulator.approve(start(browser, provider, next_url))))


def snapshot(app) -> dict:
    with app.app_context():
        return {
            "users": sorted(
                (u.id, u.username, u.email_key) for u in db.session.scalars(select(User))
            ),
            "links": sorted(
                (link.user_id, link.connector, link.subject)
                for link in db.session.scalars(select(LinkedIdentity))
            ),
        }


def database_text(app) -> str:
    """Every row of every table, as text: to look for a secret anywhere in the database."""
    with app.app_context():
        return repr(
            [
                list(row)
                for table in db.metadata.sorted_tables
                for row in db.session.execute(table.select())
            ]
        )


def signed_in_as(browser: Browser) -> str | None:
    r = browser.get("/account")
    if r.status_code != 200:
        return None
    html = r.get_data(as_text=True)
    return html.split("<dt>Username</dt><dd>")[1].split("</dd>")[0]


# -- the buttons and the dance ----------------------------------------------------------


def test_login_page_shows_one_button_per_configured_provider(browser):
    html = browser.get("/login?next=/account").get_data(as_text=True)
    buttons = (("Google", "google"), ("Facebook", "facebook"), ("X", "twitter"))
    for label, name in (*buttons, ("GitHub", "github")):
        assert f"Continue with {label}" in html
        assert f'href="/login/{name}?next=/account"' in html


def test_only_configured_providers_get_a_button(database_url, tmp_path, emulator):
    settings = social_settings(emulator)
    for key in ("FACEBOOK", "TWITTER"):
        settings[f"{key}_OAUTH_CLIENT_SECRET"] = None
    app = make_app(database_url, tmp_path, **settings)
    html = https_client(app).get("/login").get_data(as_text=True)
    assert "Continue with Google" in html
    assert "Continue with Facebook" not in html and "Continue with X" not in html
    assert https_client(app).get("/login/facebook").status_code == 404
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(
    "provider,subject,username,email",
    [
        ("google", "g-1001", "grace", "grace@gmail.test"),  # email_verified: kept
        ("twitter", "x-3003", "xena", "xena@x.test"),  # confirmed_email: kept
        ("facebook", "f-2002", "frank-f", None),  # Facebook asserts nothing: not kept
    ],
)
def test_first_sign_in_creates_an_account(
    app, browser, emulator, provider, subject, username, email
):
    r = dance(browser, emulator, provider)
    assert r.status_code == 302 and r.headers["Location"] == "/account"
    assert signed_in_as(browser) == username
    state = snapshot(app)
    ((user_id, name, email_key),) = state["users"]
    assert (name, email_key) == (username, email)
    assert state["links"] == [(user_id, provider, subject)]
    with app.app_context():
        assert db.session.get(User, user_id).password_hash is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_provider_token_is_used_for_the_profile_and_never_stored(
    app, browser, emulator, provider
):
    """The service never calls a provider for the person later: its tokens would be secrets
    kept for nothing, so none is written anywhere."""
    assert dance(browser, emulator, provider).status_code == 302
    (profile,) = [r for r in emulator.requests if r["path"].endswith(PROFILE_ENDS[provider])]
    access_token = profile["headers"]["Authorization"].split()[1]
    dump = database_text(app)
    assert access_token not in dump and f"{provider}-at-" not in dump
    assert "twitter-rt-" not in dump  # X also gives a refresh token


def test_known_identity_signs_in_to_its_account(app, browser, emulator):
    dance(browser, emulator, "google")
    first = snapshot(app)
    browser.logout()
    emulator.profiles["google"]["email"] = "changed@gmail.test"
    assert dance(browser, emulator, "google").status_code == 302
    assert signed_in_as(browser) == "grace"
    assert snapshot(app)["users"] == first["users"]  # same account; e-mail not rewritten


def test_x_uses_pkce_s256(app, browser, emulator):
    url = start(browser, "twitter")
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    browser.get(callback_path(emulator.approve(url)))
    token_requests = [r for r in emulator.requests if r["path"].endswith("/oauth2/token")]
    assert token_requests and token_requests[-1]["form"].get("code_verifier")
    assert signed_in_as(browser) == "xena"


def test_subject_is_the_provider_id_not_the_email(app, browser, emulator):
    dance(browser, emulator, "google")
    browser.logout()
    emulator.profiles["google"]["sub"] = "g-other"  # another person, same e-mail address
    r = dance(browser, emulator, "google")
    assert r.status_code == 409
    assert "already uses the e-mail address grace@gmail.test" in r.get_data(as_text=True)


def test_username_is_made_unique(app, browser, emulator):
    with app.app_context():
        accounts.create_local("xena", "someone@example.org", PASSWORD)
    dance(browser, emulator, "twitter")
    assert signed_in_as(browser) == "xena-2"


def test_next_is_followed_only_on_this_site(app, browser, emulator):
    r = dance(browser, emulator, "google", next_url="/account?tab=apps")
    assert r.headers["Location"] == "/account?tab=apps"
    browser.logout()
    r = dance(browser, emulator, "google", next_url="https://evil.example/")
    assert r.headers["Location"] == "/account"


# -- linking rules ------------------------------------------------------------------------


def test_existing_email_is_not_linked_automatically(app, browser, user, emulator):
    emulator.profiles["google"]["email"] = "ALICE@example.org"
    before = snapshot(app)
    r = dance(browser, emulator, "google")
    assert r.status_code == 409
    html = r.get_data(as_text=True)
    assert "sign in to it first, then connect Google from your account page" in html
    assert snapshot(app) == before
    assert signed_in_as(browser) is None


def test_takeover_with_an_unverified_email_fails_even_with_auto_link(
    database_url, tmp_path, emulator
):
    """The attacker's Facebook account claims the victim's address (Facebook does not say it
    is verified): no link, no session, nothing stored, even with auto-linking on."""
    app = make_app(
        database_url, tmp_path, **social_settings(emulator, SOCIAL_AUTO_LINK_VERIFIED_EMAIL=True)
    )
    with app.app_context():
        db.create_all()
        victim = accounts.create_local("victim", "victim@example.org", PASSWORD)
        victim.email_verified = True  # the victim has used the verification link
        db.session.commit()
    b = Browser(https_client(app))
    try:
        emulator.profiles["facebook"]["email"] = "victim@example.org"
        before = snapshot(app)
        r = dance(b, emulator, "facebook")
        assert r.status_code == 409
        assert snapshot(app) == before and signed_in_as(b) is None
        # A verified address from Google does link, because auto-linking is on.
        emulator.profiles["google"]["email"] = "victim@example.org"
        assert dance(b, emulator, "google").status_code == 302
        assert signed_in_as(b) == "victim"
    finally:
        with app.app_context():
            for table in reversed(db.metadata.sorted_tables):
                db.session.execute(table.delete())
            db.session.commit()
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def auto_link_app(database_url, tmp_path, emulator):
    app = make_app(
        database_url, tmp_path, **social_settings(emulator, SOCIAL_AUTO_LINK_VERIFIED_EMAIL=True)
    )
    with app.app_context():
        db.create_all()
    yield app
    dispose(app)


@pytest.mark.parametrize("provider,field", [("google", "email"), ("twitter", "confirmed_email")])
def test_an_account_registered_with_someone_elses_address_does_not_receive_their_sign_in(
    auto_link_app, emulator, provider, field
):
    """Pre-account hijacking: the attacker registers with the victim's address and never
    verifies it; the victim's later sign-in with that verified address is not joined to the
    attacker's account, even with auto-linking on."""
    app = auto_link_app
    email = "victim@example.org"
    emulator.profiles[provider][field] = email  # verified at the provider
    attacker = Browser(https_client(app))
    r = attacker.post(
        "/register",
        {"username": "mallory", "email": email, "password": PASSWORD, "confirm": PASSWORD},
    )
    assert r.status_code == 302
    attacker.logout()
    before = snapshot(app)

    victim = Browser(https_client(app))
    r = dance(victim, emulator, provider)
    assert r.status_code == 409
    assert f"already uses the e-mail address {email}" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(victim) is None
    # The attacker's account gained no way in for the victim's identity.
    attacker.login("mallory")
    assert signed_in_as(attacker) == "mallory"
    assert [link[1] for link in snapshot(app)["links"]] == ["local"]


def test_connect_from_the_account_page(app, browser, user, emulator):
    browser.login()
    r = browser.post("/account/connect/google", token_from="/account")
    assert r.status_code == 302 and r.headers["Location"] == "/login/google"
    r = dance(browser, emulator, "google")
    assert r.headers["Location"] == "/account"
    page = browser.get("/account").get_data(as_text=True)
    assert "Google is connected" in page and "Disconnect" in page
    assert snapshot(app)["links"] == [
        (user.id, "google", "g-1001"),
        (user.id, "local", str(user.id)),
    ]
    browser.logout()
    dance(browser, emulator, "google")
    assert signed_in_as(browser) == "alice"  # the connected Google account signs in to alice


def test_an_unverified_account_gains_no_sign_in_method(auto_link_app, emulator):
    """The "trojan identifier": someone registers with another person's address and connects
    their own Google account to it. When the real owner later takes the account over by a
    password reset, that Google account would still sign in to it. Until the address is
    verified, nothing can be connected; checked again when the provider answers."""
    app = auto_link_app
    squatter = Browser(https_client(app))
    squatter.post(
        "/register",
        {
            "username": "mallory",
            "email": "victim@example.org",
            "password": PASSWORD,
            "confirm": PASSWORD,
        },
    )
    before = snapshot(app)
    r = squatter.post("/account/connect/google", token_from="/account")
    assert r.status_code == 303 and r.headers["Location"] == "/account"
    page = squatter.get("/account").get_data(as_text=True)
    assert "Verify your e-mail address victim@example.org first" in page
    assert snapshot(app) == before

    # Allowed once verified; but an address changed (unverified) during the dance is caught
    # when the provider answers.
    with app.app_context():
        db.session.scalar(select(User).where(User.username == "mallory")).email_verified = True
        db.session.commit()
    assert squatter.post("/account/connect/google", token_from="/account").status_code == 302
    callback = emulator.approve(start(squatter, "google"))
    with app.app_context():
        mallory = db.session.scalar(select(User).where(User.username == "mallory"))
        mallory.set_email("someone@example.org")
        db.session.commit()
    r = squatter.get(callback_path(callback))
    assert r.status_code == 403
    assert "Verify your e-mail address someone@example.org first" in r.get_data(as_text=True)
    assert snapshot(app)["links"] == before["links"]


def test_connect_needs_post_with_csrf(app, browser, user, emulator):
    browser.login()
    assert browser.get("/account/connect/google").status_code == 405
    assert browser.post("/account/connect/google", csrf=False).status_code == 400
    assert browser.post("/account/connect/myspace", token_from="/account").status_code == 404


def test_an_identity_links_to_one_account_only(app, browser, user, emulator):
    dance(browser, emulator, "twitter")  # xena's account owns x-3003
    browser.logout()
    browser.login()
    before = snapshot(app)
    browser.post("/account/connect/twitter", token_from="/account")
    r = dance(browser, emulator, "twitter")
    assert r.status_code == 409
    assert "already connected to another account" in r.get_data(as_text=True)
    assert snapshot(app) == before
    assert signed_in_as(browser) == "alice"


def test_login_button_does_not_link_even_when_signed_in(app, browser, user, emulator):
    """Only the account page's Connect links; a plain sign-in while signed in switches."""
    browser.login()
    dance(browser, emulator, "google")
    assert signed_in_as(browser) == "grace"
    links = snapshot(app)["links"]
    assert (user.id, "google", "g-1001") not in links


def test_disconnect_only_while_another_way_remains(app, browser, user, emulator):
    browser.login()
    browser.post("/account/connect/google", token_from="/account")
    dance(browser, emulator, "google")
    r = browser.post("/account/disconnect/google", token_from="/account")
    assert r.status_code == 302
    assert snapshot(app)["links"] == [(user.id, "local", str(user.id))]
    assert browser.post("/account/disconnect/local", token_from="/account").status_code == 404
    browser.logout()
    # A social-only account cannot remove its only way in.
    dance(browser, emulator, "twitter")
    before = snapshot(app)
    r = browser.post("/account/disconnect/twitter", token_from="/account")
    assert r.status_code == 303
    assert "only way to sign in" in browser.get("/account").get_data(as_text=True)
    assert snapshot(app) == before


def test_social_account_has_no_usable_password(app, browser, emulator):
    emulator.profiles["google"]["email"] = "grace@example.org"
    dance(browser, emulator, "google")
    browser.logout()
    for password in ("", " ", "x", PASSWORD, "grace@example.org"):
        r = browser.login("grace", password)
        assert r.status_code in (400, 401)
    # A reset link is not sent to an account that has no password to reset.
    assert browser.post("/reset", {"email": "grace@example.org"}).status_code == 200
    with app.app_context():
        from identity.models import PasswordReset

        assert db.session.query(PasswordReset).count() == 0
    with app.app_context():
        assert db.session.query(User).one().password_hash is None


# -- failures: a clear page, nothing stored -----------------------------------------------


@pytest.mark.parametrize(
    "knobs,status,message",
    [
        ({"deny": True}, 403, "You did not allow access at Google"),
        ({"authorize_error": "server_error"}, 502, "Google reported an error (server_error)"),
        ({"token_error": "invalid_grant"}, 502, "Google did not accept the sign-in"),
        ({"token_status": 500}, 502, "Google"),
        ({"token_delay": 3}, 504, "Google did not answer in time"),
        ({"profile_status": 500}, 502, "Google did not say who you are"),
        ({"profile_delay": 3}, 504, "Google did not answer in time"),
        # Google answering other scopes than asked: oauthlib raises "Scope has changed".
        ({"token_scope": "openid email"}, 502, "Google did not accept the sign-in"),
    ],
)
def test_failures_show_a_page_and_store_nothing(app, browser, emulator, knobs, status, message):
    emulator.configure("google", **knobs)
    before = snapshot(app)
    r = dance(browser, emulator, "google")
    assert r.status_code == status, r.get_data(as_text=True)
    html = r.get_data(as_text=True)
    assert message in html and "Traceback" not in html
    assert snapshot(app) == before and signed_in_as(browser) is None


@pytest.mark.parametrize(
    "provider,profile",
    [
        ("google", {"email": "nobody@gmail.test", "email_verified": True}),
        ("facebook", {"name": "No Id"}),
        ("twitter", {"name": "No Id", "username": "noid"}),
    ],
)
def test_profile_without_an_id(app, browser, emulator, provider, profile):
    emulator.profiles[provider] = profile
    before = snapshot(app)
    r = dance(browser, emulator, provider)
    assert r.status_code == 502 and "did not say who you are" in r.get_data(as_text=True)
    assert snapshot(app) == before


def test_state_mismatch_is_refused(app, browser, emulator):
    callback = emulator.approve(start(browser, "google"))
    parts = urlsplit(callback)
    query = parse_qs(parts.query)
    query["state"] = ["forged-" + query["state"][0]]
    before = snapshot(app)
    r = browser.get(urlunsplit(("", "", parts.path, urlencode(query, doseq=True), "")))
    assert r.status_code == 400
    assert "could not be verified" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(browser) is None


def test_callback_in_another_browser_is_refused(app, browser, emulator):
    """Login CSRF: an attacker's callback URL opened in the victim's browser."""
    callback = emulator.approve(start(browser, "google"))
    victim = Browser(https_client(app))
    r = victim.get(callback_path(callback))
    assert r.status_code == 400
    assert snapshot(app)["users"] == [] and signed_in_as(victim) is None


def test_callback_without_code_or_with_garbage(app, browser, emulator):
    start(browser, "google")
    r = browser.get("/login/google/authorized?state=x")
    assert r.status_code == 400
    assert browser.get("/login/google/authorized?error=%00%ff").status_code == 502


def test_secrets_never_reach_the_log(app, browser, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    dance(browser, emulator, "twitter")
    verifier = next(
        r["form"]["code_verifier"] for r in emulator.requests if r["path"].endswith("/oauth2/token")
    )
    secret = emulator.clients["twitter"][1]
    assert secret not in caplog.text and verifier not in caplog.text
    assert "twitter-at-" not in caplog.text and "twitter-rt-" not in caplog.text


FORGED = "bad\n2026-12-06 11:00:00,000 INFO identity.audit [-] admin signed in\r\x1b[2K\u2028\u202e"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_providers_error_description_cannot_forge_log_lines(
    database_url, tmp_path, emulator, log_format
):
    """A provider's error_description (outside text) is logged as one line, its newlines,
    carriage returns, terminal escapes and Unicode line separators escaped."""
    app = make_app(database_url, tmp_path, **social_settings(emulator), LOG_FORMAT=log_format)
    with app.app_context():
        db.create_all()
    (handler,) = [h for h in logging.getLogger("identity").handlers if getattr(h, "_idp", False)]
    written = io.StringIO()
    stderr = handler.setStream(written)
    try:
        emulator.configure("google", authorize_error="server_error")
        emulator.configure("google", authorize_error_description=FORGED)
        browser = Browser(https_client(app))
        r = browser.get(callback_path(emulator.approve(start(browser, "google"))))
    finally:
        handler.setStream(stderr)
        dispose(app)
    assert r.status_code == 502
    lines = written.getvalue().splitlines()
    (line,) = [line for line in lines if "sign-in failed" in line]
    assert not any("admin signed in" in other for other in lines if other != line)
    escaped = (
        "bad\\n2026-12-06 11:00:00,000 INFO identity.audit [-] admin signed in"
        "\\r\\x1b[2K\\u2028\\u202e"
    )
    if log_format == "json":
        assert escaped in json.loads(line)["message"]
    else:
        assert escaped in line and "google sign-in failed: provider_error" in line
    for char in "\r\x1b\u2028\u202e":
        assert char not in written.getvalue()


def test_numeric_facebook_app_id_from_the_environment(monkeypatch, tmp_path):
    from flask import Flask

    import config

    monkeypatch.setenv("IDP_FACEBOOK_OAUTH_CLIENT_ID", "1234567890")
    flask_app = Flask("t", instance_path=str(tmp_path))
    config.load(flask_app)
    assert flask_app.config["FACEBOOK_OAUTH_CLIENT_ID"] == "1234567890"


@pytest.mark.parametrize("state", ["é", "%C3%A9", "\u202e", "x" * 5000, "%00"])
def test_odd_state_values_are_a_mismatch_not_an_error(app, browser, emulator, state):
    start(browser, "google")
    r = browser.get(f"/login/google/authorized?code=abc&state={state}")
    assert r.status_code == 400 and "could not be verified" in r.get_data(as_text=True)


def test_disconnect_needs_post_with_csrf(app, browser, user, emulator):
    browser.login()
    browser.post("/account/connect/google", token_from="/account")
    dance(browser, emulator, "google")
    before = snapshot(app)
    assert browser.get("/account/disconnect/google").status_code == 405
    assert browser.post("/account/disconnect/google", csrf=False).status_code == 400
    assert snapshot(app) == before


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_callback_address_is_the_issuers_whatever_the_host_header(
    app, browser, emulator, provider
):
    """The redirect URI sent to the provider comes from IDP_ISSUER, not from the Host
    header a client chooses; the token exchange sends the same one."""
    r = browser.get(f"/login/{provider}", headers={"Host": "evil.example"})
    sent = parse_qs(urlsplit(r.headers["Location"]).query)["redirect_uri"]
    assert sent == [f"https://idp.test/login/{provider}/authorized"]
    done = browser.get(
        callback_path(emulator.approve(r.headers["Location"])), headers={"Host": "evil.example"}
    )
    # The emulator refuses a token request whose redirect_uri is not the authorize one's.
    assert done.status_code == 302, done.get_data(as_text=True)
    assert urlsplit(done.headers["Location"]).path == "/account"
