"""acr and step-up, walked as an app walks them (Authlib's client over HTTPS): discovery
says which classes exist, ID tokens say which one was met, and an app that asks for (or is
registered to require) more than the session has gets the missing step, never a weaker
token. What counts is which methods the session used, not how recent it is."""

from __future__ import annotations

import re

import pyotp
import pytest
import requests
from oidc_rp import App, Person, register, sign_in_and_allow
from test_mfa import now_code

from identity.auth import mfa
from identity.auth.step_up import NO_PASSKEY
from identity.extensions import db
from identity.models import TotpFactor
from identity.oidc import clients

SECRET_RE = re.compile(r'id="totp-secret">([A-Z2-7 ]+)<')


@pytest.fixture
def idp_settings() -> dict:
    return {"MFA_REQUIRED": "none"}


def id_claims(app: App, response) -> dict:
    return app.verify(app.redeem(response)["id_token"]).claims


def enrol_on_account_page(person: Person, idp) -> str:
    """Set up an authenticator app from the account page of a signed-in person; its secret."""
    page = person.open(f"{idp.url}/account/two-factor")
    secret = SECRET_RE.search(page.text).group(1).replace(" ", "")
    done = person.submit(page, {"code": now_code(secret)}, action="/account/two-factor")
    assert "Save your recovery codes" in done.text
    return secret


def test_discovery_advertises_the_acr_values(idp):
    meta = requests.get(
        f"{idp.url}/.well-known/openid-configuration", verify=idp.ca, timeout=10
    ).json()
    assert meta["acr_values_supported"] == ["phr", "mfa", "0"]
    assert "acr" in meta["claims_supported"]


def test_a_one_factor_session_gets_acr_0(idp):
    app = App(idp, register(idp))
    claims = id_claims(app, sign_in_and_allow(Person(idp), app))
    assert claims["acr"] == "0" and claims["amr"] == ["pwd"]


def test_a_recent_password_only_session_is_asked_for_the_second_factor(idp):
    """alice signed in with her password a moment ago, then set up an app: her session is
    still one factor, so acr_values=mfa asks for a code (not for her password again)."""
    app = App(idp, register(idp))
    person = Person(idp)
    first = sign_in_and_allow(person, app)
    assert id_claims(app, first)["acr"] == "0"
    secret = enrol_on_account_page(person, idp)

    page = person.open(app.authorization_url(acr_values="mfa"))
    assert page.final.endswith("/login/second-factor"), page.final
    done = person.submit(page, {"code": now_code(secret, 1)}, action="/login/second-factor")
    claims = id_claims(app, done)
    assert claims["acr"] == "mfa" and claims["amr"] == ["pwd", "otp", "mfa"]
    # Once met, the class is kept by the session: asked again, no step.
    again = person.open(app.authorization_url(acr_values="mfa"))
    assert id_claims(app, again)["acr"] == "mfa"


def test_an_app_registered_to_require_two_factors_has_them_enrolled_first(idp):
    """No factor yet: the step is the enrolment, and only then a code is issued."""
    app = App(idp, register(idp, require_acr="mfa"))
    person = Person(idp)
    page = person.open(app.authorization_url())
    page = person.sign_in(page)
    assert page.final.endswith("/login/second-factor/enrol"), page.final
    secret = SECRET_RE.search(page.text).group(1).replace(" ", "")
    codes_page = person.submit(page, {"code": now_code(secret)}, action="/enrol")
    assert "Save your recovery codes" in codes_page.text
    onward = re.search(r'href="([^"]*authorize[^"]*)"', codes_page.text).group(1)
    done = person.open(idp.url + onward.replace("&amp;", "&"))
    if "Allow" in done.text:
        done = person.submit(done, {"decision": "allow"})
    claims = id_claims(app, done)
    assert claims["acr"] == "mfa"
    with idp.app.app_context():
        assert db.session.query(TotpFactor).count() == 1


def test_prompt_none_with_a_weaker_session_answers_interaction_required(idp):
    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    sign_in_and_allow(person, app)
    answer = person.open(app.authorization_url(acr_values="mfa", prompt="none"))
    assert app.callback_params(answer)["error"] == "interaction_required"


def test_phr_without_a_passkey_says_what_to_do(idp):
    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    sign_in_and_allow(person, app)
    page = person.open(app.authorization_url(acr_values="phr"))
    assert page.status_code == 403 and NO_PASSKEY in page.text.replace("&#39;", "'")


def test_a_totp_code_does_not_meet_phr(idp):
    """With both factors, an app asking for a passkey gets a page that takes no code."""
    with idp.app.app_context():
        from identity.auth import accounts
        from identity.models import Passkey

        alice = accounts.find("alice")
        db.session.add(
            Passkey(
                user_id=alice.id, credential_id="AAAA", public_key=b"k", sign_count=0, name="Laptop"
            )
        )
        secret = pyotp.random_base32()
        db.session.add(TotpFactor(user_id=alice.id, secret=mfa.seal(secret), last_step=0))
        db.session.commit()
    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    page = person.open(app.authorization_url())
    page = person.sign_in(page)
    done = person.submit(page, {"code": now_code(secret)}, action="/login/second-factor")
    assert id_claims(app, done)["acr"] == "mfa"
    step = person.open(app.authorization_url(acr_values="phr"))
    assert step.final.endswith("/login/second-factor")
    assert "asks for a passkey" in step.text and 'name="code"' not in step.text


def test_unknown_acr_values_are_ignored(idp):
    app = App(idp, register(idp, skip_consent=True))
    claims = id_claims(app, sign_in_and_allow(Person(idp), app, acr_values="urn:gold"))
    assert claims["acr"] == "0"


def test_cli_sets_and_clears_what_an_app_requires(idp):
    runner = idp.app.test_cli_runner()
    out = runner.invoke(
        args=[
            "client",
            "create",
            "--name",
            "vault",
            "--redirect-uri",
            "https://vault.example/cb",
            "--acr",
            "phr",
            "--json",
        ]
    )
    assert out.exit_code == 0, out.output
    assert '"require_acr": "phr"' in out.output
    out = runner.invoke(args=["client", "update", "vault", "--acr", "none"])
    assert out.exit_code == 0 and "changed: require_acr" in out.output
    bad = runner.invoke(args=["client", "update", "vault", "--acr", "gold"])
    assert bad.exit_code != 0 and "--acr: 'gold' is not one of none, mfa, phr" in bad.output
    with idp.app.app_context():
        assert clients.find("vault").as_dict()["require_acr"] is None
