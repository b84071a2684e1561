"""An administrator's reset of a person's second factors (the factors may be lost, or in someone
else's hands) signs that person out everywhere, as disabling the account does: their browser
sessions end at the next request, remember-me cookies restore nothing, forward-auth cookies
die with their sessions, every token (refresh tokens, offline ones too) is revoked and apps
with a back-channel logout endpoint are told. Against the provider served over real HTTPS."""

from __future__ import annotations

import time

import pyotp
import pytest
from oidc_rp import App, Person, logout_receiver, register

from conftest import PASSWORD
from identity.auth import accounts, mfa
from identity.extensions import db
from identity.models import BrowserSession, Event, RememberToken, TotpFactor, User
from identity.oidc.logout import wait_for_deliveries

REMEMBER = "__Host-remember"
OFFLINE = "openid profile offline_access"


def enrol_totp(idp, username: str = "alice") -> str:
    secret = pyotp.random_base32()
    with idp.app.app_context():
        user = accounts.find(username)
        step = int(time.time() // 30)
        db.session.add(TotpFactor(user_id=user.id, secret=mfa.seal(secret), last_step=step - 2))
        mfa.issue_recovery_codes(user)
        db.session.commit()
    return secret


def alice_in_an_app(idp, receiver, secret: str):
    """alice signs in through an app (password, "keep me signed in", a TOTP code) and allows
    it offline access: her browser, the app and its tokens."""
    app = App(idp, register(idp, backchannel_logout_uri=receiver.url), scope=OFFLINE)
    person = Person(idp)
    page = person.open(app.authorization_url(prompt="consent"))
    page = person.submit(page, {"username": "alice", "password": PASSWORD, "remember": "y"})
    assert page.final.endswith("/login/second-factor"), page.final
    page = person.submit(page, {"code": pyotp.TOTP(secret).now()})
    page = person.submit(page, {"decision": "allow"})
    tokens = app.redeem(page)
    assert "offline_access" in tokens["scope"].split() and tokens["refresh_token"]
    return app, person, tokens


def reset_by_console(idp, alice_id: int) -> None:
    with idp.app.app_context():
        accounts.create_local("root", "root@example.org", PASSWORD, admin=True)
    admin = Person(idp)
    admin.sign_in(admin.open(f"{idp.url}/login"), "root")
    page = admin.open(f"{idp.url}/admin/users/{alice_id}/mfa-reset")
    done = admin.submit(page, {"admin_password": PASSWORD}, action="mfa-reset")
    assert done.status_code == 200 and "second factor is reset" in done.text, done.text


def reset_by_cli(idp, alice_id: int) -> None:
    result = idp.app.test_cli_runner().invoke(args=["user", "reset-mfa", "alice"])
    assert result.exit_code == 0, result.output
    assert "signed out everywhere" in result.output


@pytest.mark.parametrize("reset", [reset_by_console, reset_by_cli], ids=["console", "cli"])
def test_a_second_factor_reset_signs_the_person_out_everywhere(idp, reset):
    secret = enrol_totp(idp)
    with logout_receiver() as receiver:
        app, person, tokens = alice_in_an_app(idp, receiver, secret)
        sid = app.verify(tokens["id_token"]).claims["sid"]
        assert person.open(f"{idp.url}/account").final == f"{idp.url}/account"
        (remembered,) = [c for c in person.http.cookies if c.name == REMEMBER]
        with idp.app.app_context():
            alice_id = User.find("alice").id

        reset(idp, alice_id)

        # Her browser is signed out at its next request, the remember-me cookie included.
        page = person.open(f"{idp.url}/account")
        assert "/login" in page.final and "Sign in" in page.text, page.final
        # A browser holding nothing but the remember-me cookie is not restored either.
        again = Person(idp)
        again.http.cookies.set_cookie(remembered)
        assert "/login" in again.open(f"{idp.url}/account").final
        with idp.app.app_context():
            assert db.session.query(BrowserSession).filter_by(user_id=alice_id).count() == 0
            assert db.session.query(RememberToken).filter_by(user_id=alice_id).count() == 0

        # Every token is revoked, the offline refresh token too, and the app is told.
        refreshed = app.post(
            "/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        assert app.post("/introspect", {"token": tokens["access_token"]}).json() == {
            "active": False
        }
        assert receiver.arrived.wait(10)
        wait_for_deliveries()
    (body,) = receiver.received
    assert app.verify(body["logout_token"]).claims["sid"] == sid
    with idp.app.app_context():
        assert mfa.factors(User.find("alice")) == []
        reasons = [
            e.data["reason"]
            for e in db.session.query(Event).filter_by(type="session.ended", user_id=alice_id)
        ]
    assert reasons == ["mfa_reset"]


def test_an_admin_resetting_their_own_second_factor_is_signed_out_too(idp):
    with idp.app.app_context():
        accounts.create_local("root", "root@example.org", PASSWORD, admin=True)
    secret = enrol_totp(idp, "root")
    admin = Person(idp)
    page = admin.sign_in(admin.open(f"{idp.url}/login"), "root")
    admin.submit(page, {"code": pyotp.TOTP(secret).now()})
    with idp.app.app_context():
        root_id = User.find("root").id
    page = admin.open(f"{idp.url}/admin/users/{root_id}/mfa-reset")
    assert "this session ends too" in page.text
    done = admin.submit(page, {"admin_password": PASSWORD}, action="mfa-reset")
    assert "/login" in done.final and "Sign in again" in done.text
    assert "/login" in admin.open(f"{idp.url}/account").final
