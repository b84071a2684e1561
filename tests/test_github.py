"""GitHub sign-in against the provider emulator: the numeric id is the subject, the address
is the primary one only when GitHub has verified it, PKCE, and GitHub's own ways of
answering (errors with status 200, comma-separated scopes)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from test_connector_contract import settings
from test_social import callback_path, dance, signed_in_as, snapshot, start

from conftest import PASSWORD, Browser, dispose, https_client, make_app
from identity.auth import accounts
from identity.extensions import db
from identity.models import User


@pytest.fixture
def app_overrides(emulator):
    return settings(emulator)


def test_the_subject_is_the_numeric_id_and_the_address_the_primary_verified_one(
    app, browser, emulator
):
    emulator.profiles["github"]["email"] = "public@octo.test"  # the public one: not used
    assert dance(browser, emulator, "github").status_code == 302
    ((user_id, username, email_key),) = snapshot(app)["users"]
    assert (username, email_key) == ("octo", "octo@octo.test")
    assert snapshot(app)["links"] == [(user_id, "github", "4004")]
    with app.app_context():
        assert db.session.get(User, user_id).email_verified is True
    (emails_call,) = [r for r in emulator.requests if r["path"].endswith("/user/emails")]
    assert emails_call["headers"]["Authorization"].startswith("Bearer github-at-")


def test_an_unverified_primary_address_gives_no_address(app, browser, emulator):
    """A verified address that is not the primary one is not taken instead."""
    emulator.profiles["github"]["emails"] = [
        {"email": "octo@octo.test", "primary": True, "verified": False, "visibility": None},
        {"email": "old@octo.test", "primary": False, "verified": True, "visibility": None},
    ]
    assert dance(browser, emulator, "github").status_code == 302
    ((_id, username, email_key),) = snapshot(app)["users"]
    assert (username, email_key) == ("octo", None)


def test_no_addresses_at_all(app, browser, emulator):
    emulator.profiles["github"]["emails"] = []
    assert dance(browser, emulator, "github").status_code == 302
    assert signed_in_as(browser) == "octo"
    assert snapshot(app)["users"][0][2] is None


@pytest.fixture
def auto_link_app(database_url, tmp_path, emulator):
    app = make_app(
        database_url, tmp_path, **settings(emulator, SOCIAL_AUTO_LINK_VERIFIED_EMAIL=True)
    )
    with app.app_context():
        db.create_all()
    yield app
    dispose(app)


def test_a_verified_primary_address_links_like_the_others(auto_link_app, emulator):
    """The same linking rule as Google and X: auto-linking joins only when both addresses
    are verified."""
    app = auto_link_app
    with app.app_context():
        owner = accounts.create_local("owner", "octo@octo.test", PASSWORD)
        owner.email_verified = True
        db.session.commit()
    browser = Browser(https_client(app))
    assert dance(browser, emulator, "github").status_code == 302
    assert signed_in_as(browser) == "owner"
    assert [link[1] for link in snapshot(app)["links"]] == ["github", "local"]


def test_pkce_s256_and_a_json_token_answer(app, browser, emulator):
    url = start(browser, "github")
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["scope"] == ["user:email"]
    browser.get(callback_path(emulator.approve(url)))
    (token_call,) = [r for r in emulator.requests if r["path"].endswith("/access_token")]
    assert token_call["form"]["code_verifier"]
    assert "application/json" in token_call["headers"]["Accept"]
    assert signed_in_as(browser) == "octo"


def test_a_refused_code_answered_with_status_200_is_a_page(app, browser, emulator):
    """GitHub says "bad_verification_code" in a 200 answer: still a refusal, nothing stored."""
    emulator.configure("github", token_error="bad_verification_code")
    before = snapshot(app)
    r = dance(browser, emulator, "github")
    assert r.status_code == 502 and "GitHub did not accept the sign-in" in r.get_data(as_text=True)
    assert snapshot(app) == before and signed_in_as(browser) is None


def test_an_id_that_is_not_a_number_or_text_is_no_profile(app, browser, emulator):
    emulator.profiles["github"]["id"] = True
    r = dance(browser, emulator, "github")
    assert r.status_code == 502 and "GitHub did not say who you are" in r.get_data(as_text=True)
    assert snapshot(app)["users"] == []


def test_settings_from_the_environment(monkeypatch, tmp_path):
    from flask import Flask

    import config

    monkeypatch.setenv("IDP_GITHUB_OAUTH_CLIENT_ID", "12345")
    monkeypatch.setenv("IDP_GITHUB_API_BASE_URL", "https://ghe.example/api/v3/")
    flask_app = Flask("t", instance_path=str(tmp_path))
    config.load(flask_app)
    assert flask_app.config["GITHUB_OAUTH_CLIENT_ID"] == "12345"
    assert flask_app.config["GITHUB_API_BASE_URL"] == "https://ghe.example/api/v3/"
    assert flask_app.config["GITHUB_TOKEN_URL"] == "https://github.com/login/oauth/access_token"
