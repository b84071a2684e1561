"""The connector contract: every registered redirect connector, through the same cases
against the provider emulator (a real HTTPS server): new identity, returning identity,
unverified e-mail, provider error, timeout, and bad input (state mismatch, missing code,
malformed profile JSON).

A new redirect connector gets an `Upstream` below (how the emulator plays it);
test_every_redirect_connector_is_under_contract fails until it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from test_social import callback_path, dance, signed_in_as, snapshot, start

from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity.auth import accounts
from identity.connectors.providers import PROVIDERS
from identity.extensions import db
from identity.models import Event, User


@dataclass(frozen=True)
class Upstream:
    """How the emulator plays one connector's upstream."""

    subject: str  # the default person's id there
    username: str  # the username their first sign-in gets here
    email: str | None  # the address kept here (a verified one), None when none is
    unverified: Callable[[dict, str], None]  # make the profile claim `address`, unverified


def _google(profile, address):
    profile.update(email=address, email_verified=False)


def _facebook(profile, address):
    profile["email"] = address  # Facebook never says an address is verified


def _twitter(profile, address):
    profile.pop("confirmed_email", None)  # X only gives confirmed addresses: none then


def _github(profile, address):
    profile["email"] = address  # the public address proves nothing
    profile["emails"] = [
        {"email": address, "primary": True, "verified": False, "visibility": "public"},
        {"email": "other@octo.test", "primary": False, "verified": True, "visibility": None},
    ]


UPSTREAMS = {
    "google": Upstream("g-1001", "grace", "grace@gmail.test", _google),
    "facebook": Upstream("f-2002", "frank-f", None, _facebook),
    "twitter": Upstream("x-3003", "xena", "xena@x.test", _twitter),
    "github": Upstream("4004", "octo", "octo@octo.test", _github),
}
CONNECTORS = sorted(UPSTREAMS)


def settings(emulator, **overrides) -> dict:
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


@pytest.fixture
def app_overrides(emulator):
    return settings(emulator)


def failures(app) -> list[tuple[str, str]]:
    with app.app_context():
        return [
            (e.data["method"], e.data["reason"])
            for e in db.session.scalars(select(Event).where(Event.type == "signin.failure"))
        ]


def test_every_redirect_connector_is_under_contract(app):
    """Present and future: a redirect connector the emulator cannot play fails here."""
    assert sorted(app.extensions["idp.connectors"].redirect_ids()) == CONNECTORS


@pytest.mark.parametrize("connector", CONNECTORS)
def test_new_identity_creates_an_account(app, browser, emulator, connector):
    up = UPSTREAMS[connector]
    r = dance(browser, emulator, connector)
    assert r.status_code == 302 and r.headers["Location"] == "/account"
    assert signed_in_as(browser) == up.username
    state = snapshot(app)
    ((user_id, _name, email_key),) = state["users"]
    assert email_key == up.email
    assert state["links"] == [(user_id, connector, up.subject)]
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user.password_hash is None and user.email_verified is bool(up.email)
    with browser.client.session_transaction() as s:
        assert s["connector"] == connector and s["amr"] == ["fed"]


@pytest.mark.parametrize("connector", CONNECTORS)
def test_returning_identity_signs_in_to_the_same_account(app, browser, emulator, connector):
    dance(browser, emulator, connector)
    first = snapshot(app)
    browser.logout()
    assert dance(browser, emulator, connector).status_code == 302
    assert signed_in_as(browser) == UPSTREAMS[connector].username
    assert snapshot(app) == first


@pytest.fixture
def auto_link_app(database_url, tmp_path, emulator):
    app = make_app(
        database_url, tmp_path, **settings(emulator, SOCIAL_AUTO_LINK_VERIFIED_EMAIL=True)
    )
    with app.app_context():
        db.create_all()
    yield app
    dispose(app)


@pytest.mark.parametrize("connector", CONNECTORS)
def test_an_unverified_email_joins_nothing_and_is_not_kept(auto_link_app, emulator, connector):
    """Even with auto-linking on, an address the upstream does not vouch for neither joins
    the account that has it nor is given to a new one."""
    app = auto_link_app
    with app.app_context():
        victim = accounts.create_local("victim", "victim@example.org", PASSWORD)
        victim.email_verified = True
        db.session.commit()
        victim_id = victim.id
    UPSTREAMS[connector].unverified(emulator.profiles[connector], "victim@example.org")
    before = snapshot(app)
    browser = Browser(https_client(app))
    r = dance(browser, emulator, connector)
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
def test_provider_error_is_a_page_and_nothing_is_stored(app, browser, emulator, connector):
    label = PROVIDERS[connector].label
    emulator.configure(connector, deny=True)
    before = snapshot(app)
    r = dance(browser, emulator, connector)
    assert r.status_code == 403
    assert f"You did not allow access at {label}" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(browser) is None
    assert failures(app) == [(connector, "access_denied")]


@pytest.mark.parametrize("connector", CONNECTORS)
@pytest.mark.parametrize("knob", ["token_delay", "profile_delay"])
def test_timeout_is_a_page_and_nothing_is_stored(app, browser, emulator, connector, knob):
    emulator.configure(connector, **{knob: 3})
    before = snapshot(app)
    r = dance(browser, emulator, connector)
    assert r.status_code == 504
    html = r.get_data(as_text=True)
    assert f"{PROVIDERS[connector].label} did not answer in time" in html
    assert "Traceback" not in html
    assert snapshot(app) == before and signed_in_as(browser) is None
    assert failures(app) == [(connector, "timeout")]


@pytest.mark.parametrize("connector", CONNECTORS)
def test_state_mismatch_is_refused(app, browser, emulator, connector):
    callback = urlsplit(emulator.approve(start(browser, connector)))
    query = parse_qs(callback.query)
    before = snapshot(app)
    r = browser.get(f"{callback.path}?code={query['code'][0]}&state=forged")
    assert r.status_code == 400 and "could not be verified" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(browser) is None
    assert failures(app) == [(connector, "state_mismatch")]


@pytest.mark.parametrize("connector", CONNECTORS)
def test_missing_code_is_refused(app, browser, emulator, connector):
    state = parse_qs(urlsplit(start(browser, connector)).query)["state"][0]
    r = browser.get(f"/login/{connector}/authorized?state={state}")
    assert r.status_code == 400 and "could not be verified" in r.get_data(as_text=True)
    assert signed_in_as(browser) is None
    assert failures(app) == [(connector, "missing_code")]
    # The dance is spent: the same state does not work a second time.
    assert browser.get(f"/login/{connector}/authorized?state={state}&code=x").status_code == 400


@pytest.mark.parametrize("connector", CONNECTORS)
def test_malformed_profile_json_is_a_page(app, browser, emulator, connector):
    emulator.configure(connector, profile_malformed=True)
    before = snapshot(app)
    r = dance(browser, emulator, connector)
    assert r.status_code == 502
    assert f"{PROVIDERS[connector].label} did not say who you are" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(browser) is None
    assert failures(app) == [(connector, "bad_profile")]


@pytest.mark.parametrize("connector", CONNECTORS)
def test_the_callback_url_is_the_one_to_register(app, browser, emulator, connector):
    """The redirect URI sent upstream is the connector's own callback on this service."""
    query = parse_qs(urlsplit(start(browser, connector)).query)
    assert callback_path(query["redirect_uri"][0]) == f"/login/{connector}/authorized"
