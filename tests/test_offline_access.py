"""`offline_access` (OpenID Connect Core 11): granted only with prompt=consent to apps
allowed the refresh grant, kept in the grant's scope so that a refresh may repeat it, and
outliving a sign-out, but not a password change, a disabled account or a revocation."""

from __future__ import annotations

from oidc_rp import App, Person, register, sign_in_and_allow

from conftest import PASSWORD

OFFLINE = "openid profile offline_access"


def _refresh(app: App, refresh_token: str, scope: str | None = None):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope is not None:
        data["scope"] = scope
    return app.post("/token", data)


def _offline_grant(idp, person: Person | None = None, name: str = "notes", **options):
    app = App(idp, register(idp, name, **options), scope=OFFLINE)
    person = person or Person(idp)
    tokens = app.redeem(sign_in_and_allow(person, app, prompt="consent"))
    return app, person, tokens


def test_offline_access_is_granted_with_prompt_consent_and_a_refresh_may_repeat_it(idp):
    app, _, tokens = _offline_grant(idp)
    assert set(tokens["scope"].split()) == {"openid", "profile", "offline_access"}
    # mod_auth_openidc repeats its original scope at every refresh.
    again = _refresh(app, tokens["refresh_token"], OFFLINE)
    assert again.status_code == 200, again.text
    assert set(again.json()["scope"].split()) == set(OFFLINE.split())


def test_a_refresh_may_ask_any_subset_of_the_grant_and_a_wider_ask_spends_nothing(idp):
    app, _, tokens = _offline_grant(idp)
    wider = _refresh(app, tokens["refresh_token"], OFFLINE + " email")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    narrower = _refresh(app, tokens["refresh_token"], "openid offline_access")
    assert narrower.status_code == 200, narrower.text
    assert set(narrower.json()["scope"].split()) == {"openid", "offline_access"}


def test_offline_access_without_prompt_consent_is_ignored(idp):
    app = App(idp, register(idp), scope=OFFLINE)
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    assert set(tokens["scope"].split()) == {"openid", "profile"}
    # The consent page did not offer it either.
    person = Person(idp)
    page = person.open(app.authorization_url())
    page = person.sign_in(page)
    assert "Stay connected" not in page.text


def test_offline_access_needs_the_refresh_grant(idp):
    app, _, tokens = _offline_grant(idp, grant_types=["authorization_code"])
    assert set(tokens["scope"].split()) == {"openid", "profile"}
    assert "refresh_token" not in tokens


def test_a_first_party_app_gets_offline_access_only_when_the_person_was_asked(idp):
    # Without prompt=consent a first-party app asks no one: no offline_access.
    app = App(idp, register(idp, "portal", skip_consent=True), scope=OFFLINE)
    person = Person(idp)
    page = person.sign_in(person.open(app.authorization_url()))
    assert "Allow" not in page.text  # nobody was asked
    tokens = app.redeem(page)
    assert "offline_access" not in tokens["scope"].split()
    # With prompt=consent even a first-party app shows the consent page (issue 15 item 3),
    # and what the person allows there includes offline_access.
    asked = person.open(app.authorization_url(prompt="consent"))
    assert "Allow" in asked.text and "Stay connected" in asked.text
    tokens = app.redeem(person.submit(asked, {"decision": "allow"}))
    assert "offline_access" in tokens["scope"].split()


def test_sign_out_keeps_an_offline_access_grant_and_ends_a_plain_one(idp):
    offline, person, offline_tokens = _offline_grant(idp)
    plain = App(idp, register(idp, "plain"))
    plain_tokens = plain.redeem(sign_in_and_allow(person, plain))
    account = person.open(f"{idp.url}/account")
    person.submit(account, {}, action="/logout")

    ended = _refresh(plain, plain_tokens["refresh_token"])
    assert ended.status_code == 400 and ended.json()["error"] == "invalid_grant"
    kept = _refresh(offline, offline_tokens["refresh_token"], OFFLINE)
    assert kept.status_code == 200, kept.text
    # ...and the person still sees the app on their account page, to cut it off.
    again = Person(idp)
    page = again.sign_in(again.open(f"{idp.url}/account"))
    assert "notes" in again.open(f"{idp.url}/account").text, page.final


def test_a_password_change_ends_offline_access_grants_of_other_sessions(idp):
    app, phone, tokens = _offline_grant(idp)
    phone.submit(phone.open(f"{idp.url}/account"), {}, action="/logout")
    laptop = Person(idp)
    account = laptop.sign_in(laptop.open(f"{idp.url}/account"))
    account = laptop.open(f"{idp.url}/account")
    new = "a brand new long passphrase"
    laptop.submit(
        account,
        {"current_password": PASSWORD, "password": new, "confirm": new},
        action="/account/password",
    )
    refused = _refresh(app, tokens["refresh_token"], OFFLINE)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


def test_disabling_the_account_ends_offline_access_grants(idp):
    from identity.admin import accounts
    from identity.extensions import db
    from identity.models import User
    from identity.oidc.logout import wait_for_deliveries

    app, _, tokens = _offline_grant(idp)
    with idp.app.app_context():
        accounts.disable(db.session.scalar(db.select(User).filter_by(username="alice")))
    wait_for_deliveries()
    refused = _refresh(app, tokens["refresh_token"], OFFLINE)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


def test_revoking_the_refresh_token_ends_an_offline_access_grant(idp):
    app, _, tokens = _offline_grant(idp)
    revoked = app.post("/revoke", {"token": tokens["refresh_token"]})
    assert revoked.status_code == 200
    refused = _refresh(app, tokens["refresh_token"], OFFLINE)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
