"""Signing in with any OpenID Connect provider, through the service's real routes against a
real upstream over HTTPS on loopback (oidc_upstream_emulator.py): the happy paths, and every
way the upstream can fail or lie, each a clear page with nothing stored."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from oidc_rp import Person, register
from oidc_upstream_emulator import CLIENT_ID, UpstreamEmulator
from sqlalchemy import select
from test_social import database_text, signed_in_as, snapshot

from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity import ConfigError
from identity.auth import accounts
from identity.connectors.oidc_upstream import subject_for
from identity.extensions import db
from identity.models import LinkedIdentity, User
from identity.models.audit import Event
from servers import https_server


@pytest.fixture
def app_overrides(upstream, upstream_entry):
    return upstream.app_settings(**upstream_entry)


def start(browser: Browser, upstream_id: str = "corp", next_url: str | None = None):
    path = f"/login/oidc/{upstream_id}" + (f"?next={next_url}" if next_url else "")
    return browser.get(path)


def approve(upstream: UpstreamEmulator, location: str) -> str:
    """The person's browser at the upstream: the callback URL it is sent back to."""
    with requests.get(location, verify=upstream.ca_file, allow_redirects=False, timeout=10) as resp:
        assert resp.status_code == 302, resp.text
        back = resp.headers["Location"]
    parts = urlsplit(back)
    assert parts.netloc == "idp.test", back  # the redirect URI is built from IDP_ISSUER
    return urlunsplit(("", "", parts.path, parts.query, ""))


def dance(browser: Browser, upstream: UpstreamEmulator, next_url: str | None = None):
    r = start(browser, next_url=next_url)
    assert r.status_code == 302, r.get_data(as_text=True)
    return browser.get(approve(upstream, r.headers["Location"]))


def page(r) -> str:
    return r.get_data(as_text=True)


def audited(app, action: str) -> list[dict]:
    with app.app_context():
        return [
            dict(e.data or {})
            for e in db.session.scalars(
                select(Event).where(Event.type == action).order_by(Event.id)
            )
        ]


# -- the happy paths ----------------------------------------------------------------------


def test_login_page_has_a_button_per_upstream(browser):
    html = page(browser.get("/login"))
    assert 'href="/login/oidc/corp"' in html
    assert "Continue with Corp SSO" in html
    # The generic OpenID mark (templates/icons/openid.svg), drawn inline like every mark.
    button = html.split('href="/login/oidc/corp"')[0].rsplit("<a ", 1)[1]
    assert 'class="button provider provider-openid"' in button
    assert 'fill="#f7931e"' in html.split('href="/login/oidc/corp"')[1].split("</a>")[0]


def test_new_identity_creates_an_account_and_a_returning_one_signs_into_it(app, browser, upstream):
    r = dance(browser, upstream)
    assert r.status_code == 302 and r.headers["Location"] == "/account"
    assert signed_in_as(browser) == "oscar"
    account = page(browser.get("/account"))
    assert "oidc-corp" not in account  # its label, in how you sign in and the sessions list
    assert account.count("Corp SSO") >= 2
    with app.app_context():
        user = db.session.scalar(select(User))
        assert user.groups == ["staff", "ops"]
        # The upstream's email_verified is not trusted unless the entry says so: an address
        # that is not known to be theirs is not kept.
        assert user.email is None and not user.email_verified
        (link,) = user.links
        assert link.connector == "oidc-corp"
        assert link.subject == f"{upstream.issuer}#u-1001"
    before = snapshot(app)
    browser.logout()
    r = dance(browser, upstream)
    assert r.status_code == 302
    assert signed_in_as(browser) == "oscar"
    assert snapshot(app) == before
    assert [e["method"] for e in audited(app, "signin.success")] == ["oidc-corp", "oidc-corp"]


def test_groups_follow_the_upstream_at_every_sign_in(app, browser, upstream):
    # The upstream says which groups a person is in: someone it took out of "ops" must not
    # keep "ops" here (and in every app's groups claim) because the account is older.
    assert dance(browser, upstream).status_code == 302
    browser.logout()
    upstream.profile["groups"] = ["staff"]
    assert dance(browser, upstream).status_code == 302
    with app.app_context():
        assert db.session.scalar(select(User)).groups == ["staff"]
    (changed,) = audited(app, "signin.groups_changed")
    assert changed["removed"] == ["ops"] and changed["added"] == []


def test_next_is_kept_across_the_dance(browser, upstream):
    r = dance(browser, upstream, next_url="/account%3Fx%3D1")
    assert r.headers["Location"] == "/account?x=1"


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example/", "/%09/evil.example"])
def test_next_never_leaves_the_site(browser, upstream, target):
    r = dance(browser, upstream, next_url=target)
    assert r.headers["Location"] == "/account"


@pytest.mark.parametrize(
    "upstream_entry,asserted,kept,verified",
    [
        ({"trust_email_verified": True}, True, "oscar@upstream.test", True),
        ({"trust_email_verified": True}, False, None, False),
        ({"trust_email_verified": True}, "true", None, False),  # a string is not a JSON true
        ({}, True, None, False),
    ],
)
def test_email_verified_counts_only_when_asserted_and_trusted(
    app, browser, upstream, asserted, kept, verified
):
    upstream.profile["email_verified"] = asserted
    assert dance(browser, upstream).status_code == 302
    with app.app_context():
        user = db.session.scalar(select(User))
        assert (user.email, user.email_verified) == (kept, verified)


def test_tokens_from_the_upstream_are_not_stored(app, browser, upstream):
    assert dance(browser, upstream).status_code == 302
    (access,) = upstream.tokens
    assert access not in database_text(app)
    with browser.client.session_transaction() as s:
        assert access not in repr(dict(s))
        assert not [k for k in s if k.startswith("_state_")]  # the state is spent


def test_unfinished_sign_ins_do_not_grow_the_cookie(app, browser, upstream):
    """Several tabs may each start a sign-in; only the newest few are kept."""
    locations = [start(browser).headers["Location"] for _ in range(6)]
    with browser.client.session_transaction() as s:
        assert len([k for k in s if k.startswith("_state_oidc-corp_")]) == 3
    r = browser.get(approve(upstream, locations[0]))  # the oldest is forgotten
    assert r.status_code == 400
    r = browser.get(approve(upstream, locations[-1]))
    assert r.status_code == 302, page(r)


def test_claims_missing_from_the_id_token_come_from_userinfo(app, browser, upstream):
    upstream.id_token_claims = ("sub",)
    assert dance(browser, upstream).status_code == 302
    assert "/op/userinfo" in upstream.requests
    assert signed_in_as(browser) == "oscar"
    with app.app_context():
        assert db.session.scalar(select(User)).groups == ["staff", "ops"]


def test_a_full_id_token_needs_no_userinfo(browser, upstream):
    assert dance(browser, upstream).status_code == 302
    assert "/op/userinfo" not in upstream.requests


def test_keys_are_read_again_when_an_unknown_kid_appears(app, browser, upstream):
    assert dance(browser, upstream).status_code == 302
    browser.logout()
    upstream.rotate()
    r = dance(browser, upstream)
    assert r.status_code == 302, page(r)
    assert signed_in_as(browser) == "oscar"
    assert upstream.requests.count("/op/jwks") == 2
    assert upstream.requests.count("/op/.well-known/openid-configuration") == 1


def test_discovery_cannot_configure_our_http_client(browser, upstream, refused_port):
    """Authlib hands discovery fields to its requests session as keyword arguments: a
    document with "proxies" or "verify" must not reach it."""
    dead = f"http://127.0.0.1:{refused_port}"
    upstream.extra_metadata = {"proxies": {"https": dead}, "verify": False}
    r = dance(browser, upstream)
    assert r.status_code == 302, page(r)
    assert signed_in_as(browser) == "oscar"


def test_second_factor_comes_before_the_session(app, browser, upstream):
    app.config["MFA_REQUIRED"] = "all"
    r = dance(browser, upstream)
    assert r.status_code == 302 and r.headers["Location"] == "/login/second-factor"
    assert browser.get("/account").status_code == 302  # no session yet


def test_this_service_as_the_upstream(database_url, tmp_path):
    """Another instance of this service, served over HTTPS, with a registered app: the
    whole flow against a real OpenID provider."""
    upstream_db = f"sqlite:///{tmp_path / 'upstream.sqlite3'}"

    def build(port: int):
        up = make_app(upstream_db, tmp_path / "up", ISSUER=f"https://localhost:{port}")
        with up.app_context():
            db.create_all()
            accounts.create_local("alice", "alice@example.org", PASSWORD, name="Alice Liddell")
        return up

    with https_server(build, tmp_path / "up" / "certs") as (up, port):
        own = SimpleNamespace(
            app=up, url=f"https://localhost:{port}", ca=str(tmp_path / "up" / "certs" / "ca.pem")
        )
        registered = register(own, redirect_uris=["https://idp.test/login/oidc/self/callback"])
        entry = {
            "id": "self",
            "issuer": own.url,
            "client_id": registered.client_id,
            "client_secret": registered.secret,
            "label": "Our other IdP",
            "scopes": "openid profile email",
        }
        down = make_app(
            database_url, tmp_path / "down", OIDC_UPSTREAMS=[entry], SOCIAL_CA_FILE=own.ca
        )
        with down.app_context():
            db.create_all()
        try:
            browser = Browser(https_client(down))
            r = browser.get("/login/oidc/self")
            assert r.headers["Location"].startswith(f"{own.url}/authorize?"), page(r)
            person = Person(own)
            at_upstream = person.sign_in(person.open(r.headers["Location"]))
            if "Allow" in at_upstream.text:
                at_upstream = person.submit(at_upstream, {"decision": "allow"})
            back = urlsplit(at_upstream.final)
            assert back.netloc == "idp.test", at_upstream.final
            r = browser.get(f"{back.path}?{back.query}")
            assert r.status_code == 302 and r.headers["Location"] == "/account", page(r)
            assert signed_in_as(browser) == "alice"
            with down.app_context():
                (link,) = db.session.scalars(select(LinkedIdentity))
                assert link.connector == "oidc-self"
                assert link.subject.startswith(f"{own.url}#")
                assert db.session.scalar(select(User)).name == "Alice Liddell"
        finally:
            dispose(down)
    dispose(up)


def test_a_subject_too_long_for_its_column_is_hashed():
    assert subject_for("https://op.example", "s") == "https://op.example#s"
    long = subject_for("https://op.example/" + "p" * 100, "s" * 255)
    assert long.startswith("sha256:") and len(long) == 71
    assert long != subject_for("https://op.example/" + "p" * 100, "s" * 254 + "t")


# -- linking rules, as for the social providers ---------------------------------------------


def test_an_address_in_use_is_never_joined_and_says_how_to_connect(app, browser, user, upstream):
    upstream.profile["email"] = "Alice@Example.org"
    r = dance(browser, upstream)
    assert r.status_code == 409
    assert "connect Corp SSO from your account page" in page(r)
    with app.app_context():
        assert db.session.scalars(select(LinkedIdentity)).all() == [
            link for link in db.session.scalars(select(LinkedIdentity)) if link.connector == "local"
        ]


def test_connect_from_the_account_page_then_sign_in_with_it(app, browser, user, upstream):
    with app.app_context():
        db.session.get(User, user.id).email_verified = True
        db.session.commit()
    browser.login()
    html = page(browser.get("/account"))
    assert "Corp SSO" in html
    r = browser.post("/account/connect/oidc-corp", token_from="/account")
    assert r.status_code == 302 and r.headers["Location"] == "/login/oidc/corp"
    r = browser.get(r.headers["Location"])
    r = browser.get(approve(upstream, r.headers["Location"]))
    assert r.headers["Location"] == "/account"
    assert "Corp SSO is connected" in page(browser.get("/account"))
    with app.app_context():
        assert {link.connector for link in db.session.get(User, user.id).links} == {
            "local",
            "oidc-corp",
        }
    browser.logout()
    dance(browser, upstream)
    assert signed_in_as(browser) == "alice"
    r = browser.post("/account/disconnect/oidc-corp", token_from="/account")
    assert r.status_code == 302
    assert "Corp SSO is disconnected" in page(browser.get("/account"))


# -- failures: a clear page, nothing stored --------------------------------------------------


def nothing_stored(app) -> None:
    assert snapshot(app) == {"users": [], "links": []}


def failed(app, browser, r, status: int, words: str, reason: str) -> None:
    assert r.status_code == status, page(r)
    assert words in page(r)
    assert "Sign-in with Corp SSO did not complete" in page(r)
    nothing_stored(app)
    assert signed_in_as(browser) is None
    assert reason in [e["reason"] for e in audited(app, "signin.failure")]


def test_access_denied(app, browser, upstream):
    upstream.deny = True
    r = dance(browser, upstream)
    failed(app, browser, r, 403, "You did not allow access at Corp SSO", "access_denied")


def test_discovery_with_another_issuer_is_refused(app, browser, upstream):
    upstream.discovery_issuer = "https://evil.example/op"
    r = start(browser)
    failed(app, browser, r, 502, "Please tell your administrators", "wrong_issuer")


@pytest.mark.parametrize(
    "knobs",
    [
        ("id_token_issuer", "https://evil.example/op"),
        ("audience", "another-app"),
        ("audience", ["another-app"], "azp", CLIENT_ID),  # azp alone is not the audience
        ("bad_signature", True),
        ("expired", True),
        ("nonce", "a-nonce-from-an-earlier-sign-in"),
    ],
)
def test_an_id_token_that_does_not_verify_is_refused(app, browser, upstream, knobs):
    for knob, value in zip(knobs[::2], knobs[1::2], strict=True):
        setattr(upstream, knob, value)
    r = dance(browser, upstream)
    failed(app, browser, r, 502, "could not be verified", "bad_id_token")


def test_userinfo_about_someone_else_is_refused(app, browser, upstream):
    upstream.id_token_claims = ("sub",)
    upstream.userinfo_sub = "someone-else"
    r = dance(browser, upstream)
    failed(app, browser, r, 502, "did not say who you are", "bad_userinfo")


def test_a_callback_used_twice_is_refused(app, browser, upstream):
    r = start(browser)
    callback = approve(upstream, r.headers["Location"])
    assert browser.get(callback).status_code == 302
    before = snapshot(app)
    browser.logout()
    r = browser.get(callback)
    assert r.status_code == 400
    assert "could not be verified" in page(r)
    assert snapshot(app) == before
    assert signed_in_as(browser) is None


def test_a_callback_from_another_browser_is_refused(app, client, upstream):
    mine, theirs = Browser(client), Browser(app.test_client())
    r = start(theirs)
    r = mine.get(approve(upstream, r.headers["Location"]))
    failed(app, mine, r, 400, "did not start here", "state_mismatch")


def test_an_upstream_that_answers_too_late(app, browser, upstream):
    upstream.delay = 3  # SOCIAL_TIMEOUT is 1
    r = dance(browser, upstream)
    failed(app, browser, r, 504, "did not answer in time", "timeout")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port that refuses connections: bound (so no other process takes it meanwhile) and
    not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def down_upstream(refused_port, upstream_entry):
    upstream_entry["issuer"] = f"https://127.0.0.1:{refused_port}/op"


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture
def silent_upstream(silent_port, upstream_entry):
    upstream_entry["issuer"] = f"https://127.0.0.1:{silent_port}/op"


def test_an_upstream_that_never_answers_discovery(silent_upstream, app, browser, upstream):
    r = start(browser)
    failed(app, browser, r, 504, "did not answer in time", "timeout")


def test_an_upstream_that_is_down(down_upstream, app, browser, upstream):
    r = start(browser)
    failed(app, browser, r, 502, "could not be reached", "provider_unreachable")


@pytest.mark.parametrize(
    "path",
    [
        "/login/oidc/corp/callback",
        "/login/oidc/corp/callback?code=x",
        "/login/oidc/corp/callback?code=x&state=" + "%C3%A9" * 3000,
        "/login/oidc/corp/callback?code=%00&state=%FF%FE",
        "/login/oidc/nope",
        "/login/oidc/%C3%A9%00",
        "/login/oidc/corp/callback?error=" + "x" * 5000,
    ],
)
def test_bad_callbacks_and_unknown_upstreams(app, browser, upstream, path):
    r = browser.get(path)
    assert r.status_code in (400, 404, 502), page(r)
    assert "Traceback" not in page(r)
    nothing_stored(app)


@pytest.mark.parametrize(
    "query,status,words,reason",
    [
        ("", 400, "The answer from Corp SSO is incomplete", "bad_callback"),
        ("?code=x", 400, "could not be verified", "state_mismatch"),
        ("?state=forged", 400, "could not be verified", "state_mismatch"),
    ],
)
def test_each_bad_callback_has_its_reason(app, browser, upstream, query, status, words, reason):
    start(browser)  # a sign-in is pending in this browser: none of these finishes it
    failed(app, browser, browser.get(f"/login/oidc/corp/callback{query}"), status, words, reason)


@pytest.mark.parametrize(
    "error", ["%3Cscript%3Ex", "Your+account+is+locked%2C+call+0800+123", "temporarily_unavailable"]
)
def test_error_parameters_are_shown_only_as_codes(app, browser, upstream, error):
    r = browser.get(f"/login/oidc/corp/callback?error={error}&state=s")
    assert r.status_code == 502
    assert "<script>x" not in page(r) and "call 0800" not in page(r)
    shown = "temporarily_unavailable" if error.startswith("temp") else "unknown"
    assert f"reported an error ({shown})" in page(r)


# -- settings ---------------------------------------------------------------------------------

ENTRY = {"id": "corp", "issuer": "https://op.example", "client_id": "c", "client_secret": "s"}


@pytest.mark.parametrize(
    "value,message",
    [
        ("not json", "IDP_OIDC_UPSTREAMS must be a JSON list of objects"),
        ({"id": "x"}, "IDP_OIDC_UPSTREAMS must be a JSON list"),
        ([{**ENTRY, "client_secret": ""}], r"\(corp\): 'client_secret' is required"),
        ([{**ENTRY, "id": "Corp!"}], "'id' must be 1 to 27 characters"),
        ([{**ENTRY, "issuer": "http://op.example"}], "must be an https:// URL"),
        ([{**ENTRY, "issuer": "https://op.example/?a=1"}], "without query or fragment"),
        ([{**ENTRY, "scopes": "email profile"}], "'scopes' must be a list of scopes that"),
        ([{**ENTRY, "trust_email_verified": "yes"}], "must be true or false"),
        ([{**ENTRY, "clientsecret": "s"}], "unknown keys"),
        ([ENTRY, ENTRY], "the id 'corp' is used twice"),
        ([{**ENTRY, "groups_claim": "a b"}], "'groups_claim' must be a claim name"),
    ],
)
def test_bad_settings_stop_the_start_with_one_line(database_url, tmp_path, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        make_app(database_url, tmp_path, OIDC_UPSTREAMS=value)
    assert "\n" not in str(caught.value)
    assert "'s'" not in str(caught.value)  # never the secret


def close(app) -> None:
    """The database connections of an app a test built itself (PostgreSQL warns of open
    ones), without emptying tables it may not have made."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_a_disabled_upstream_has_no_button_and_no_route(database_url, tmp_path):
    app = make_app(database_url, tmp_path, OIDC_UPSTREAMS=[{**ENTRY, "enabled": False}])
    try:
        assert app.extensions["idp.connectors"].redirect() == []
        assert Browser(https_client(app)).get("/login/oidc/corp").status_code == 404
    finally:
        close(app)


def test_settings_from_the_environment(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv(
        "IDP_OIDC_UPSTREAMS",
        '[{"id": "corp", "issuer": "https://op.example", "client_id": "c",'
        ' "client_secret": "s", "scopes": "openid email"}]',
    )
    app = make_app(database_url, tmp_path)
    (connector,) = app.extensions["idp.connectors"].redirect()
    assert connector.id == "oidc-corp" and connector.label == "op.example"
    assert connector.upstream.scopes == ("openid", "email")
    assert "'s'" not in repr(connector.upstream)


# -- the command line -------------------------------------------------------------------------


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["upstream", *args])


def test_cli_lists_upstreams_without_their_secret(app, upstream):
    r = cli(app, "list")
    assert r.exit_code == 0 and "corp" in r.output and "Corp SSO" in r.output
    assert upstream.secret not in r.output
    r = cli(app, "list", "--json")
    assert '"client_id": "idp-downstream"' in r.output and upstream.secret not in r.output


def test_cli_check_reads_discovery_and_keys_and_gives_the_redirect_uri(app, upstream):
    r = cli(app, "check", "corp")
    assert r.exit_code == 0, r.output
    assert "corp: discovery and keys OK" in r.output
    assert "redirect uri: https://idp.test/login/oidc/corp/callback" in r.output
    assert upstream.key.kid in r.output
    assert upstream.secret not in r.output


@pytest.mark.parametrize(
    "args,words",
    [
        (("check", "nope"), "no upstream 'nope' (configured: corp)"),
        (("check", "corp"), "corp: wrong_issuer (discovery says issuer 'https://evil.example'"),
    ],
)
def test_cli_check_failures_are_one_line(app, upstream, args, words):
    upstream.discovery_issuer = "https://evil.example"
    r = cli(app, *args)
    assert r.exit_code == 1
    assert words in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output


def test_cli_check_of_an_upstream_that_is_down(down_upstream, app, upstream):
    r = cli(app, "check", "corp")
    assert r.exit_code == 1 and r.output.startswith("Error: corp: provider_unreachable")
    assert r.output.count("\n") == 1
