"""The connector contract: every registered redirect connector, through the same cases
against an emulator of its upstream (a real HTTPS server: the provider emulator for the
OAuth 2.0 providers, the upstream OpenID provider emulator for oidc-corp): new identity,
returning identity, unverified e-mail, provider error, timeout, and bad input (state
mismatch, missing code, malformed profile JSON).

A new redirect connector gets an `Upstream` below (how an emulator plays it);
test_every_redirect_connector_is_under_contract fails until it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from oidc_upstream_emulator import UpstreamEmulator
from sqlalchemy import select
from test_social import signed_in_as, snapshot

from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity.auth import accounts
from identity.connectors.oidc_upstream import subject_for
from identity.connectors.providers import PROVIDERS
from identity.extensions import db
from identity.models import Event, User

OIDC = "oidc-corp"


@dataclass(frozen=True)
class Upstream:
    """How the emulator plays one connector's upstream."""

    subject: str  # the default person's id there
    username: str  # the username their first sign-in gets here
    email: str | None  # the address kept here (a verified one), None when none is
    unverified: Callable[[dict, str], None]  # make the profile claim `address`, unverified
    label: str
    # The reason audited when the profile is not JSON (an OpenID provider's is userinfo).
    malformed: str = "bad_profile"


def _google(profile, address):
    profile.update(email=address, email_verified=False)


def _facebook(profile, address):
    profile["email"] = address  # Facebook never says an address is verified


def _twitter(profile, address):
    profile.pop("confirmed_email", None)  # X only gives confirmed addresses: none then


def _oidc(profile, address):
    profile.update(email=address, email_verified=False)


def _github(profile, address):
    profile["email"] = address  # the public address proves nothing
    profile["emails"] = [
        {"email": address, "primary": True, "verified": False, "visibility": "public"},
        {"email": "other@octo.test", "primary": False, "verified": True, "visibility": None},
    ]


UPSTREAMS = {
    "google": Upstream("g-1001", "grace", "grace@gmail.test", _google, "Google"),
    "facebook": Upstream("f-2002", "frank-f", None, _facebook, "Facebook"),
    "twitter": Upstream("x-3003", "xena", "xena@x.test", _twitter, "X"),
    "github": Upstream("4004", "octo", "octo@octo.test", _github, "GitHub"),
    # IDP_OIDC_UPSTREAMS' "corp" with trust_email_verified; its subject is <issuer>#<sub>.
    OIDC: Upstream("u-1001", "oscar", "oscar@upstream.test", _oidc, "Corp SSO", "bad_userinfo"),
}
CONNECTORS = sorted(UPSTREAMS)


class Play:
    """One connector's upstream, driven the same way whichever emulator plays it."""

    def __init__(self, connector: str, emulator, upstream: UpstreamEmulator):
        self.connector, self.emulator, self.upstream = connector, emulator, upstream
        self.oidc = connector == OIDC

    @property
    def login(self) -> str:
        return "/login/oidc/corp" if self.oidc else f"/login/{self.connector}"

    @property
    def callback(self) -> str:
        return "/login/oidc/corp/callback" if self.oidc else f"/login/{self.connector}/authorized"

    @property
    def profile(self) -> dict:
        return self.upstream.profile if self.oidc else self.emulator.profiles[self.connector]

    def subject(self, sub: str) -> str:
        return subject_for(self.upstream.issuer, sub) if self.oidc else sub

    def configure(self, **knobs) -> None:
        if not self.oidc:
            self.emulator.configure(self.connector, **knobs)
            return
        # Claims missing from the ID token are read from userinfo: the profile call.
        if {"profile_delay", "profile_malformed"} & set(knobs):
            self.upstream.id_token_claims = ("sub",)
        self.upstream.deny = knobs.get("deny", False)
        self.upstream.delay = knobs.get("token_delay", 0)
        self.upstream.userinfo_delay = knobs.get("profile_delay", 0)
        self.upstream.userinfo_malformed = knobs.get("profile_malformed", False)

    def start(self, browser: Browser, next_url: str | None = None) -> str:
        """Press the connector's button: the URL the service sends the browser to."""
        r = browser.get(self.login + (f"?{urlencode({'next': next_url})}" if next_url else ""))
        assert r.status_code == 302, r.get_data(as_text=True)
        return r.headers["Location"]

    def approve(self, location: str) -> str:
        """The person approves at the upstream: our callback's path and query."""
        if self.oidc:
            with requests.get(
                location, verify=self.upstream.ca_file, allow_redirects=False, timeout=10
            ) as resp:
                assert resp.status_code == 302, resp.text
                back = resp.headers["Location"]
        else:
            back = self.emulator.approve(location)
        return local(back)

    def dance(self, browser: Browser):
        return browser.get(self.approve(self.start(browser)))


def local(url: str) -> str:
    """A URL of this service (the redirect URI points back at it) as path and query."""
    parts = urlsplit(url)
    assert parts.netloc in ("localhost", "idp.test"), url
    return urlunsplit(("", "", parts.path, parts.query, ""))


@pytest.fixture
def plays(emulator, upstream) -> dict[str, Play]:
    return {c: Play(c, emulator, upstream) for c in CONNECTORS}


def settings(emulator, **overrides) -> dict:
    """Every OAuth 2.0 provider, played by the provider emulator."""
    values = {"SOCIAL_CA_FILE": emulator.ca_file, "SOCIAL_TIMEOUT": 0.5}
    for p in PROVIDERS.values():
        client_id, secret = emulator.clients[p.id]
        urls = emulator.endpoints(p.id)
        values.update(
            {
                f"{p.setting}_OAUTH_CLIENT_ID": client_id,
                f"{p.setting}_OAUTH_CLIENT_SECRET": secret,
                f"{p.setting}_AUTHORIZATION_URL": urls["authorization_url"],
                f"{p.setting}_TOKEN_URL": urls["token_url"],
                f"{p.setting}_API_BASE_URL": urls["api_base_url"],
            }
        )
    return values | overrides


def contract_settings(emulator, upstream, tmp_path, **overrides) -> dict:
    """Those providers and the upstream OpenID provider "corp", one CA file for both."""
    bundle = tmp_path / "upstream-cas.pem"
    bundle.write_text(Path(emulator.ca_file).read_text() + Path(upstream.ca_file).read_text())
    oidc = {"SOCIAL_CA_FILE": str(bundle)}
    oidc["OIDC_UPSTREAMS"] = [upstream.settings(trust_email_verified=True)]
    return settings(emulator, **oidc) | overrides


@pytest.fixture
def app_overrides(emulator, upstream, tmp_path):
    return contract_settings(emulator, upstream, tmp_path)


def failures(app) -> list[tuple[str, str]]:
    with app.app_context():
        return [
            (e.data["method"], e.data["reason"])
            for e in db.session.scalars(
                select(Event).where(Event.type == "signin.failure").order_by(Event.id)
            )
        ]


def test_every_redirect_connector_is_under_contract(app):
    """Present and future: a redirect connector the emulator cannot play fails here."""
    assert sorted(app.extensions["idp.connectors"].redirect_ids()) == CONNECTORS


@pytest.mark.parametrize("connector", CONNECTORS)
def test_new_identity_creates_an_account(app, browser, plays, connector):
    up, play = UPSTREAMS[connector], plays[connector]
    r = play.dance(browser)
    assert r.status_code == 302 and r.headers["Location"] == "/account"
    assert signed_in_as(browser) == up.username
    state = snapshot(app)
    ((user_id, _name, email_key),) = state["users"]
    assert email_key == up.email
    assert state["links"] == [(user_id, connector, play.subject(up.subject))]
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user.password_hash is None and user.email_verified is bool(up.email)
    with browser.client.session_transaction() as s:
        assert s["connector"] == connector and s["amr"] == ["fed"]


@pytest.mark.parametrize("connector", CONNECTORS)
def test_returning_identity_signs_in_to_the_same_account(app, browser, plays, connector):
    plays[connector].dance(browser)
    first = snapshot(app)
    browser.logout()
    assert plays[connector].dance(browser).status_code == 302
    assert signed_in_as(browser) == UPSTREAMS[connector].username
    assert snapshot(app) == first


@pytest.fixture
def auto_link_app(database_url, tmp_path, emulator, upstream):
    values = contract_settings(emulator, upstream, tmp_path, SOCIAL_AUTO_LINK_VERIFIED_EMAIL=True)
    app = make_app(database_url, tmp_path, **values)
    with app.app_context():
        db.create_all()
    yield app
    dispose(app)


@pytest.mark.parametrize("connector", CONNECTORS)
def test_an_unverified_email_joins_nothing_and_is_not_kept(auto_link_app, plays, connector):
    """Even with auto-linking on, an address the upstream does not vouch for neither joins
    the account that has it nor is given to a new one."""
    app = auto_link_app
    with app.app_context():
        victim = accounts.create_local("victim", "victim@example.org", PASSWORD)
        victim.email_verified = True
        db.session.commit()
        victim_id = victim.id
    UPSTREAMS[connector].unverified(plays[connector].profile, "victim@example.org")
    before = snapshot(app)
    browser = Browser(https_client(app))
    r = plays[connector].dance(browser)
    assert r.status_code in (302, 409), r.get_data(as_text=True)
    assert signed_in_as(browser) != "victim"
    after = snapshot(app)
    victim_links = [link for link in after["links"] if link[0] == victim_id]
    assert victim_links == [link for link in before["links"] if link[0] == victim_id]
    others = [u for u in after["users"] if u[0] != victim_id]
    assert all(email_key is None for _id, _name, email_key in others)
    if r.status_code == 409:
        assert after == before


@pytest.mark.parametrize("connector", CONNECTORS)
def test_provider_error_is_a_page_and_nothing_is_stored(app, browser, plays, connector):
    label = UPSTREAMS[connector].label
    plays[connector].configure(deny=True)
    before = snapshot(app)
    r = plays[connector].dance(browser)
    assert r.status_code == 403
    assert f"You did not allow access at {label}" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(browser) is None
    assert failures(app) == [(connector, "access_denied")]


@pytest.mark.parametrize("connector", CONNECTORS)
@pytest.mark.parametrize("knob", ["token_delay", "profile_delay"])
def test_timeout_is_a_page_and_nothing_is_stored(app, browser, plays, connector, knob):
    plays[connector].configure(**{knob: 3})
    before = snapshot(app)
    r = plays[connector].dance(browser)
    assert r.status_code == 504
    html = r.get_data(as_text=True)
    assert f"{UPSTREAMS[connector].label} did not answer in time" in html
    assert "Traceback" not in html
    assert snapshot(app) == before and signed_in_as(browser) is None
    assert failures(app) == [(connector, "timeout")]


@pytest.mark.parametrize("connector", CONNECTORS)
def test_state_mismatch_is_refused(app, browser, plays, connector):
    callback = urlsplit(plays[connector].approve(plays[connector].start(browser)))
    query = parse_qs(callback.query)
    before = snapshot(app)
    r = browser.get(f"{callback.path}?code={query['code'][0]}&state=forged")
    assert r.status_code == 400 and "could not be verified" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(browser) is None
    assert failures(app) == [(connector, "state_mismatch")]


@pytest.mark.parametrize("connector", CONNECTORS)
def test_missing_code_is_refused(app, browser, plays, connector):
    play = plays[connector]
    state = parse_qs(urlsplit(play.start(browser)).query)["state"][0]
    r = browser.get(f"{play.callback}?state={state}")
    assert r.status_code == 400 and "could not be verified" in r.get_data(as_text=True)
    assert signed_in_as(browser) is None
    assert failures(app) == [(connector, "missing_code")]
    # The dance is spent: the same state does not work a second time.
    assert browser.get(f"{play.callback}?state={state}&code=x").status_code == 400


@pytest.mark.parametrize("connector", CONNECTORS)
def test_malformed_profile_json_is_a_page(app, browser, plays, connector):
    up = UPSTREAMS[connector]
    plays[connector].configure(profile_malformed=True)
    before = snapshot(app)
    r = plays[connector].dance(browser)
    assert r.status_code == 502
    assert f"{up.label} did not say who you are" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(browser) is None
    assert failures(app) == [(connector, up.malformed)]


@pytest.mark.parametrize("connector", CONNECTORS)
def test_the_callback_url_is_the_one_to_register(app, browser, plays, connector):
    """The redirect URI sent upstream is the connector's own callback on this service."""
    query = parse_qs(urlsplit(plays[connector].start(browser)).query)
    assert local(query["redirect_uri"][0]) == plays[connector].callback
