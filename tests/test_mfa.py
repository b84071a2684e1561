"""Second factors through the pages: TOTP enrolment, the second step of a sign-in before any
session exists, recovery codes, the IDP_MFA_REQUIRED policy, removal and admin reset."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from audit_events import events
from sqlalchemy import select

from conftest import PASSWORD, make_app
from identity.auth import accounts, mfa, second_step
from identity.models import Event, RecoveryCode, TotpFactor, User

SECRET_RE = re.compile(r'id="totp-secret">([A-Z2-7 ]+)<')
CODES_RE = re.compile(r"<code>([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</code>")


def now_code(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset_steps * 30)


def enrol_from_account(browser) -> tuple[str, list[str]]:
    """Set up an authenticator on the account page; the secret read from the page's text."""
    page = browser.get("/account/two-factor").get_data(as_text=True)
    secret = SECRET_RE.search(page).group(1).replace(" ", "")
    r = browser.post("/account/two-factor", {"code": now_code(secret)})
    assert r.status_code == 200, r.get_data(as_text=True)
    codes = CODES_RE.findall(r.get_data(as_text=True))
    return secret, codes


def enrolled(app, username="alice") -> tuple[str, list[str]]:
    """An authenticator (and recovery codes) for `username`, set up directly; its secret and
    codes. The current step is spent, so that a test's first code is of the next step."""
    secret = pyotp.random_base32()
    with app.app_context():
        from identity.extensions import db

        user = accounts.find(username)
        step = int(time.time() // 30)
        db.session.add(TotpFactor(user_id=user.id, secret=mfa.seal(secret), last_step=step - 2))
        codes = mfa.issue_recovery_codes(user)
        db.session.commit()
    return secret, codes


def age_session(browser, seconds: int = 6 * 60) -> None:
    """Time passes: this browser's sign-in is `seconds` older (past the few minutes in which
    a sign-in is proof enough)."""
    with browser.client.session_transaction() as stored:
        stored["auth_time"] -= seconds


# -- enrolment ------------------------------------------------------------------------------


def test_enrolment_shows_a_server_made_qr_code_the_uri_and_the_secret_as_text(browser, user):
    browser.login()
    r = browser.get("/account/two-factor")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    secret = SECRET_RE.search(page).group(1).replace(" ", "")
    assert len(secret) == 32
    assert 'src="data:image/svg+xml' in page  # allowed by the CSP's img-src data:
    assert "otpauth://totp/idp.test:alice?secret=" + secret in page
    assert "<script" not in page
    # The same secret until it is confirmed (reloading shows the same QR code).
    again = browser.get("/account/two-factor").get_data(as_text=True)
    assert secret in again.replace(" ", "")


def test_enrolment_completes_only_after_one_correct_code(app, browser, user):
    browser.login()
    page = browser.get("/account/two-factor").get_data(as_text=True)
    secret = SECRET_RE.search(page).group(1).replace(" ", "")
    wrong = str((int(now_code(secret)) + 1) % 1_000_000).zfill(6)
    r = browser.post("/account/two-factor", {"code": wrong})
    assert r.status_code == 401 and "That code is not right" in r.get_data(as_text=True)
    with app.app_context():
        assert mfa.factors(User.find("alice")) == []
    r = browser.post("/account/two-factor", {"code": now_code(secret)})
    assert r.status_code == 200
    codes = CODES_RE.findall(r.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    with app.app_context():
        assert mfa.factors(User.find("alice")) == ["totp"]
    account = browser.get("/account").get_data(as_text=True)
    assert "10 of 10 left" in account
    assert [e.data for e in events(app, "mfa.enrolled")] == [{"factor": "totp"}]


def test_secrets_are_encrypted_at_rest_and_recovery_codes_hashed(app, browser, user):
    browser.login()
    secret, codes = enrol_from_account(browser)
    with app.app_context():
        from identity.extensions import db

        row = db.session.scalar(select(TotpFactor))
        assert secret not in row.secret and mfa.unseal(row.secret) == secret
        hashes = set(db.session.scalars(select(RecoveryCode.code_hash)))
        assert len(hashes) == 10
        assert not any(c.replace("-", "") in h for c in codes for h in hashes)
        for e in db.session.scalars(select(Event).order_by(Event.id)):
            assert secret not in str(e.data) and not any(c in str(e.data) for c in codes)


# -- the second step -------------------------------------------------------------------------


def test_a_password_alone_gives_no_session_to_an_account_with_a_second_factor(app, browser, user):
    secret, _ = enrolled(app)
    r = browser.login(next="/account#apps")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login/second-factor")
    with browser.client.session_transaction() as s:
        assert "_user_id" not in s
        state = s[second_step.KEY]
        assert state["amr"] == ["pwd"] and state["connector"] == "local" and state["id"]
    # Until the step passes, nothing that needs a session answers.
    assert browser.get("/account").status_code == 302
    assert "/login" in browser.get("/account").headers["Location"]
    assert browser.get("/admin/").status_code in (302, 403)
    assert "/login" in browser.get("/authorize?client_id=x").headers.get("Location", "/login")
    r = browser.post("/login/second-factor", {"code": now_code(secret)})
    assert r.status_code == 303 and r.headers["Location"] == "/account#apps"
    assert browser.get("/account").status_code == 200
    with browser.client.session_transaction() as s:
        assert s["amr"] == ["pwd", "otp", "mfa"] and s["_user_id"]
        assert second_step.KEY not in s


def test_an_accepted_time_step_is_never_accepted_again(app, browser, user):
    secret, _ = enrolled(app)
    code = now_code(secret)
    browser.login()
    assert browser.post("/login/second-factor", {"code": code}).status_code == 303
    browser.logout()
    browser.login()
    r = browser.post("/login/second-factor", {"code": code})
    assert r.status_code == 401 and "already used" in r.get_data(as_text=True)
    # Nor an earlier step's code, still inside the window.
    r = browser.post("/login/second-factor", {"code": now_code(secret, -1)})
    assert r.status_code == 401


def test_codes_one_step_either_side_are_accepted_two_are_not(app, browser, user):
    secret, _ = enrolled(app)
    browser.login()
    assert browser.post("/login/second-factor", {"code": now_code(secret, 2)}).status_code == 401
    assert browser.post("/login/second-factor", {"code": now_code(secret, 1)}).status_code == 303


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("12a456", "6-digit code"),
        ("", "Enter a code"),
        ("1234567", "6-digit code"),
        ("not-a-code", "6-digit code"),
        ("x" * 65, "too long"),
        ("12\x00456", "cannot be used"),
    ],
)
def test_malformed_codes_get_a_clear_message_and_no_session(app, browser, user, typed, message):
    enrolled(app)
    browser.login()
    r = browser.post("/login/second-factor", {"code": typed})
    assert r.status_code == 400
    assert message in r.get_data(as_text=True)
    assert browser.get("/account").status_code == 302


def test_wrong_codes_count_toward_the_account_lockout(app, browser, user):
    secret, _ = enrolled(app)
    limit = app.config["LOCKOUT_ACCOUNT_FAILURES"]
    browser.login()
    wrong = str((int(now_code(secret)) + 500_000) % 1_000_000).zfill(6)
    for _ in range(limit):
        assert browser.post("/login/second-factor", {"code": wrong}).status_code == 401
    r = browser.post("/login/second-factor", {"code": now_code(secret)})
    assert r.status_code == 429 and "Too many failed sign-in attempts" in r.get_data(as_text=True)
    assert len(events(app, "mfa.failure")) == limit + 1
    assert events(app, "signin.locked")
    # The password form is locked for the name too.
    assert browser.login().status_code == 429


def test_the_pending_step_expires_after_five_minutes(app, browser, user):
    secret, _ = enrolled(app)
    browser.login()
    with browser.client.session_transaction() as s:
        s[second_step.KEY] = {**s[second_step.KEY], "at": int(time.time()) - 301}
    r = browser.post("/login/second-factor", {"code": now_code(secret)}, token_from="/login")
    assert r.status_code == 303 and r.headers["Location"].endswith("/login")
    assert "more than 5 minutes" in browser.get("/login").get_data(as_text=True)
    assert browser.get("/account").status_code == 302


def test_without_a_pending_step_the_page_sends_to_sign_in(browser, user):
    r = browser.get("/login/second-factor")
    assert r.status_code == 303 and r.headers["Location"].endswith("/login")


def test_a_password_change_elsewhere_ends_a_pending_step(app, browser, user):
    secret, _ = enrolled(app)
    browser.login()
    with app.app_context():
        from identity.extensions import db

        User.find("alice").end_sessions()
        db.session.commit()
    r = browser.post("/login/second-factor", {"code": now_code(secret)})
    assert r.status_code == 403
    assert browser.get("/account").status_code == 302


def test_remember_me_restores_the_methods_of_the_full_sign_in(app, browser, user):
    secret, _ = enrolled(app)
    browser.login(remember="y")
    browser.post("/login/second-factor", {"code": now_code(secret)})
    with browser.client.session_transaction() as s:
        s.clear()  # the browser was closed: only the remember-me cookie is left
    assert browser.get("/account").status_code == 200
    with browser.client.session_transaction() as s:
        assert s["amr"] == ["pwd", "otp", "mfa"] and s["restored_at"]


# -- recovery codes --------------------------------------------------------------------------


def test_a_recovery_code_signs_in_once(app, browser, user):
    _, codes = enrolled(app)
    browser.login()
    r = browser.post("/login/second-factor", {"code": codes[3].upper().replace("-", " ")})
    assert r.status_code == 303
    with browser.client.session_transaction() as s:
        # RFC 8176: no one-time-password device was used, but two factors were.
        assert s["amr"] == ["pwd", "mfa"]
    assert "9 of 10 left" in browser.get("/account").get_data(as_text=True)
    browser.logout()
    browser.login()
    r = browser.post("/login/second-factor", {"code": codes[3]})
    assert r.status_code == 401
    assert [e.data["factor"] for e in events(app, "mfa.success")] == ["recovery"]


def test_new_recovery_codes_need_the_password_and_end_the_old_ones(app, browser, user):
    browser.login()
    secret, old = enrol_from_account(browser)
    age_session(browser)  # past the minutes in which the sign-in itself is proof enough
    r = browser.post("/account/recovery-codes", {"proof": "not my password"}, token_from="/account")
    assert r.status_code == 303
    assert "not your password" in browser.get("/account").get_data(as_text=True)
    r = browser.post("/account/recovery-codes", {"proof": PASSWORD}, token_from="/account")
    new = CODES_RE.findall(r.get_data(as_text=True))
    assert len(new) == 10 and not set(new) & set(old)
    browser.logout()
    browser.login()
    assert browser.post("/login/second-factor", {"code": old[0]}).status_code == 401
    assert browser.post("/login/second-factor", {"code": new[0]}).status_code == 303


def test_removing_the_authenticator_asks_the_password(app, browser, user):
    browser.login()
    enrol_from_account(browser)
    browser.post("/account/two-factor/remove", {"proof": "nope"}, token_from="/account")
    with app.app_context():
        assert mfa.factors(User.find("alice")) == ["totp"]
    browser.post("/account/two-factor/remove", {"proof": PASSWORD}, token_from="/account")
    with app.app_context():
        assert mfa.factors(User.find("alice")) == []
        assert mfa.recovery_codes_left(User.find("alice")) == 0
    assert events(app, "mfa.removed")


def test_a_password_reset_by_email_keeps_the_second_factor(app, browser, user):
    import secrets
    from datetime import timedelta

    from identity.auth import reset
    from identity.models import PasswordReset
    from identity.models.users import utcnow

    enrolled(app)
    token = secrets.token_urlsafe(32)
    with app.app_context():
        from identity.extensions import db

        db.session.add(
            PasswordReset(
                user_id=User.find("alice").id,
                token_hash=reset._digest(token),
                expires_at=utcnow() + timedelta(minutes=5),
            )
        )
        db.session.commit()
    new_password = "a brand new passphrase here"
    r = browser.post(f"/reset/{token}", {"password": new_password, "confirm": new_password})
    assert r.status_code == 302, r.get_data(as_text=True)
    r = browser.login(password=new_password)
    assert r.headers["Location"].endswith("/login/second-factor")
    with app.app_context():
        assert mfa.factors(User.find("alice")) == ["totp"]


# -- policy ----------------------------------------------------------------------------------


@pytest.fixture
def admin_app(database_url, tmp_path):
    from conftest import dispose

    app = make_app(database_url, tmp_path, MFA_REQUIRED="admins")
    with app.app_context():
        from identity.extensions import db

        db.create_all()
        accounts.create_local("root", "root@example.org", PASSWORD, admin=True)
        accounts.create_local("bob", "bob@example.org", PASSWORD)
    yield app
    dispose(app)


def test_by_default_admins_must_enrol_right_after_the_password(database_url, tmp_path):
    from config import Config

    assert Config.MFA_REQUIRED == "admins"


def test_an_admin_without_a_second_factor_enrols_before_getting_a_session(admin_app):
    from conftest import Browser, https_client

    browser = Browser(https_client(admin_app))
    r = browser.login("root", next="/admin/")
    assert r.headers["Location"].endswith("/login/second-factor")
    r = browser.get("/login/second-factor")
    assert r.status_code == 303 and r.headers["Location"].endswith("/login/second-factor/enrol")
    page = browser.get("/login/second-factor/enrol").get_data(as_text=True)
    assert "must use a second factor" in page
    assert browser.get("/admin/").status_code == 302  # no session yet
    assert browser.get("/account").status_code == 302
    secret = SECRET_RE.search(page).group(1).replace(" ", "")
    r = browser.post("/login/second-factor/enrol", {"code": "000000"[:5] + "x"})
    assert r.status_code == 400
    r = browser.post("/login/second-factor/enrol", {"code": now_code(secret)})
    assert r.status_code == 200
    assert len(CODES_RE.findall(r.get_data(as_text=True))) == 10
    assert 'href="/admin/"' in r.get_data(as_text=True)
    assert browser.get("/admin/").status_code == 200
    with browser.client.session_transaction() as s:
        assert s["amr"] == ["pwd", "otp", "mfa"]
    # The admin cannot remove the factor the policy requires.
    browser.post("/account/two-factor/remove", {"proof": PASSWORD}, token_from="/account")
    with admin_app.app_context():
        assert mfa.factors(User.find("root")) == ["totp"]


def test_admins_policy_leaves_other_people_alone(admin_app):
    from conftest import Browser, https_client

    browser = Browser(https_client(admin_app))
    r = browser.login("bob")
    assert r.headers["Location"] == "/account"


def test_all_policy_covers_everyone(database_url, tmp_path):
    from conftest import Browser, dispose, https_client

    app = make_app(database_url, tmp_path, MFA_REQUIRED="all")
    with app.app_context():
        from identity.extensions import db

        db.create_all()
        accounts.create_local("bob", "bob@example.org", PASSWORD)
    try:
        browser = Browser(https_client(app))
        r = browser.login("bob")
        assert r.headers["Location"].endswith("/login/second-factor")
        assert browser.get("/account").status_code == 302
    finally:
        dispose(app)


@pytest.mark.parametrize("value", ["some", "", "ADMINS", "true"])
def test_the_policy_setting_is_checked(database_url, tmp_path, value):
    from config import ConfigError

    with pytest.raises(ConfigError, match="IDP_MFA_REQUIRED must be none, admins or all"):
        make_app(database_url, tmp_path, MFA_REQUIRED=value)


# -- administrators --------------------------------------------------------------------------


def test_an_admin_resets_a_second_factor_with_the_password_audited_and_the_person_told(
    admin_app, smtp
):
    controller, inbox = smtp
    from conftest import Browser, https_client

    secret, _ = enrolled(admin_app, "root")
    _, _ = enrolled(admin_app, "bob")
    admin_app.config.update(
        MAIL_SERVER="127.0.0.1", MAIL_PORT=controller.port, MAIL_USE_STARTTLS=False
    )
    browser = Browser(https_client(admin_app))
    browser.login("root")
    browser.post("/login/second-factor", {"code": now_code(secret)})
    with admin_app.app_context():
        bob = User.find("bob").id
    page = browser.get(f"/admin/users/{bob}").get_data(as_text=True)
    assert "Authenticator app" in page and f"/admin/users/{bob}/mfa-reset" in page
    r = browser.post(f"/admin/users/{bob}/mfa-reset", {"admin_password": "wrong one"})
    assert r.status_code == 400
    with admin_app.app_context():
        assert mfa.factors(User.find("bob")) == ["totp"]
    r = browser.post(f"/admin/users/{bob}/mfa-reset", {"admin_password": PASSWORD})
    assert r.status_code == 303
    with admin_app.app_context():
        assert mfa.factors(User.find("bob")) == []
        assert mfa.recovery_codes_left(User.find("bob")) == 0
    (event,) = events(admin_app, "admin.user_mfa_reset")
    assert event.data == {"factors": ["totp"], "by": "root", "via": "console"}
    (message,) = inbox.wait(1)
    assert message["To"] == "bob@example.org" and "second factor" in message["Subject"]


def test_cli_reset_mfa(app, user):
    secret, _ = enrolled(app)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["user", "reset-mfa", "alice"])
    assert result.exit_code == 0, result.output
    assert "second factor is reset" in result.output
    with app.app_context():
        assert mfa.factors(User.find("alice")) == []
    result = runner.invoke(args=["user", "reset-mfa", "alice"])
    assert result.exit_code != 0 and "no second factor" in result.output
    result = runner.invoke(args=["user", "reset-mfa", "nobody"])
    assert result.exit_code != 0 and "no such user" in result.output


def test_a_first_factor_that_is_already_two_is_not_asked_again(app, user):
    """The seam a passkey sign-in (amr hwk/user/mfa) will use: no second step after it."""
    from dataclasses import replace

    from flask import session

    from identity.auth.signin import sign_in
    from identity.connectors.local import identity_for

    enrolled(app)
    with app.test_request_context("/"):
        alice = User.find("alice")
        sign_in(replace(identity_for(alice), amr=("hwk", "user", "mfa")))
        assert session["_user_id"] and session["amr"] == ["hwk", "user", "mfa"]
        assert second_step.KEY not in session
        session.clear()
        sign_in(identity_for(alice))
        assert "_user_id" not in session and session[second_step.KEY]["amr"] == ["pwd"]
