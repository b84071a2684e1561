"""Remember-me cookies are server-side tokens: stored hashed with their expiry, replaced at
every use, ended at sign-out, password change or reset, disable; a restored session keeps
the time and methods of the sign-in it remembers (max_age, prompt=login, auth_time)."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

import pytest
from flask.sessions import SecureCookieSessionInterface
from flask_login.utils import decode_cookie, encode_cookie
from oidc_rp import App, Person, register
from sqlalchemy import select, update

from conftest import PASSWORD, Browser, https_client
from identity.auth import remember
from identity.extensions import db
from identity.models import BrowserSession, Event, RememberToken, User
from identity.models.users import utcnow

REMEMBER = "__Host-remember"
SESSION = "__Host-session"
NEW_PASSWORD = "a brand new passphrase 42"


def remembered(browser: Browser) -> str:
    """Sign in with "keep me signed in"; the remember-me cookie's value."""
    assert browser.login(remember="y").status_code == 302
    return browser.client.get_cookie(REMEMBER).value


def restart(browser: Browser) -> None:
    """The browser closes and opens again: its session cookie is gone."""
    browser.client.delete_cookie(SESSION)


def with_only(app, value: str) -> Browser:
    """Another browser holding nothing but a copy of a remember-me cookie."""
    other = Browser(https_client(app))
    other.client.set_cookie(REMEMBER, value, secure=True, path="/")
    return other


def signed_in(browser: Browser) -> bool:
    return browser.get("/account").status_code == 200


def session_of(app, browser: Browser) -> dict:
    cookie = browser.client.get_cookie(SESSION)
    if cookie is None:
        return {}
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    return dict(serializer.loads(cookie.value))


def test_the_cookie_restores_a_session_once_the_browser_restarts(app, browser, user):
    remembered(browser)
    restart(browser)
    assert signed_in(browser)
    assert session_of(app, browser)["_fresh"] is False


def test_the_token_is_random_and_stored_only_as_its_sha256(app, browser, user):
    value = remembered(browser)
    series, _, secret = value.partition(".")
    assert len(secret) >= 43  # 256 random bits
    with app.test_request_context():
        assert decode_cookie(value) is None  # not Flask-Login's signed user id
    with app.app_context():
        (row,) = db.session.scalars(select(RememberToken)).all()
        assert row.series == series and row.user_id == user.id
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr(row.__dict__)
        lifetime = app.config["REMEMBER_COOKIE_DURATION"].total_seconds()
        assert abs(row.expires_at - (time.time() + lifetime)) < 60


def test_sign_out_deletes_the_cookie_with_the_attributes_a_browser_needs(browser, user):
    """A __Host- cookie is only replaced (deleted) by a Set-Cookie that is Secure too."""
    remembered(browser)
    r = browser.logout()
    (cleared,) = [c for c in r.headers.getlist("Set-Cookie") if c.startswith(REMEMBER + "=")]
    assert "Expires=Thu, 01 Jan 1970" in cleared
    assert "; Secure" in cleared and "Path=/" in cleared and "Domain" not in cleared


def test_a_copied_remember_cookie_is_refused_after_sign_out(app, browser, user):
    value = remembered(browser)
    browser.logout()
    thief = with_only(app, value)
    r = thief.get("/account")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    with app.app_context():
        assert db.session.scalars(select(RememberToken)).all() == []


def test_a_remember_cookie_is_refused_after_its_lifetime(app, browser, user):
    value = remembered(browser)
    with app.app_context():
        db.session.execute(update(RememberToken).values(expires_at=int(time.time()) - 1))
        db.session.commit()
    assert not signed_in(with_only(app, value))
    with app.app_context():
        assert db.session.scalars(select(RememberToken)).all() == []  # and forgotten


def test_a_remember_cookie_is_refused_after_its_configured_lifetime_on_the_clock(
    app, browser, user, monkeypatch
):
    value = remembered(browser)
    later = time.time() + app.config["REMEMBER_COOKIE_DURATION"].total_seconds() + 1
    monkeypatch.setattr(remember.time, "time", lambda: later)
    assert not signed_in(with_only(app, value))


def test_each_use_replaces_the_token_and_the_old_value_is_refused(app, browser, user):
    first = remembered(browser)
    restart(browser)
    assert signed_in(browser)
    second = browser.client.get_cookie(REMEMBER).value
    assert second != first and second.split(".")[0] == first.split(".")[0]  # same series
    assert not signed_in(with_only(app, first))


def test_an_old_token_presented_after_the_grace_ends_the_series_and_its_sessions(
    app, browser, user, monkeypatch
):
    """A replaced token coming back means two browsers hold the cookie: the series ends,
    and the session it restored, whoever holds it."""
    copied = remembered(browser)
    # The thief uses the copy first and gets a session...
    thief = with_only(app, copied)
    assert signed_in(thief)
    # ...then the owner's browser restarts and presents the now replaced token.
    later = time.time() + remember.REPLAY_GRACE + 1
    monkeypatch.setattr(remember.time, "time", lambda: later)
    restart(browser)
    assert not signed_in(browser)
    assert not signed_in(thief)  # the thief's restored session is over too
    with app.app_context():
        assert db.session.scalars(select(RememberToken)).all() == []
        assert "signin.remember_reuse" in {
            e.type for e in db.session.scalars(select(Event).order_by(Event.id))
        }


def test_an_old_token_within_the_grace_restores_nothing_and_ends_nothing(app, browser, user):
    """Several tabs restored at once all send the old token: only one restores; the
    others are refused without ending the series."""
    copied = remembered(browser)
    restart(browser)
    assert signed_in(browser)
    assert not signed_in(with_only(app, copied))
    restart(browser)
    assert signed_in(browser)  # the series goes on


def test_flask_logins_own_cookie_restores_nothing(app, browser, user):
    """A cookie in Flask-Login's format (the signed user id, as issued before) is no key."""
    with app.app_context():
        legacy = encode_cookie(db.session.get(User, user.id).get_id())
    assert not signed_in(with_only(app, legacy))
    browser.login(remember="y")
    restart(browser)
    browser.client.set_cookie(REMEMBER, legacy, secure=True, path="/")
    assert not signed_in(browser)


def test_changing_the_password_ends_the_other_devices_remember_cookies(app, browser, user):
    other = Browser(https_client(app))
    copied = remembered(other)
    mine = remembered(browser)
    r = browser.post(
        "/account/password",
        {"current_password": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        token_from="/account",
    )
    assert r.status_code == 302
    assert not signed_in(with_only(app, copied))
    # This device stays remembered, with a new cookie; the old one is dead.
    renewed = browser.client.get_cookie(REMEMBER).value
    assert renewed != mine
    assert not signed_in(with_only(app, mine))
    restart(browser)
    assert signed_in(browser)


def test_a_password_reset_ends_every_remember_cookie(app, browser, user):
    from identity.auth import reset as reset_links
    from identity.models import PasswordReset

    copied = remembered(browser)
    with app.app_context():
        db.session.add(
            PasswordReset(
                user_id=user.id,
                token_hash=reset_links._digest("the-link-token"),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
        db.session.commit()
    other = Browser(https_client(app))
    r = other.post(
        "/reset/the-link-token",
        {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        token_from="/reset/the-link-token",
    )
    assert r.status_code == 302
    assert not signed_in(with_only(app, copied))


def test_disabling_the_account_ends_its_remember_cookies(app, browser, user):
    copied = remembered(browser)
    result = app.test_cli_runner().invoke(args=["user", "disable", "alice"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        db.session.get(User, user.id).disabled = False  # even enabled again at once
        db.session.commit()
    assert not signed_in(with_only(app, copied))


def test_signing_in_without_remember_me_forgets_the_previous_cookie(app, browser, user):
    copied = remembered(browser)
    browser.post(
        "/login", {"username": "alice", "password": PASSWORD}, token_from="/login?reauth=1"
    )
    assert browser.client.get_cookie(REMEMBER) is None
    assert not signed_in(with_only(app, copied))


def test_a_restored_session_counts_its_lifetime_from_its_restoration(
    app, browser, user, monkeypatch
):
    remembered(browser)
    later = time.time() + app.config["SESSION_LIFETIME"] + 60
    monkeypatch.setattr("identity.auth.signin.time.time", lambda: later)
    restart(browser)
    assert signed_in(browser)
    assert signed_in(browser)  # the next request too: not "older than its lifetime"


@pytest.mark.parametrize("value", ["", ".", "x" * 4000, "a.b", "\u00e9.\u00e9", "a" * 40 + ".b"])
def test_a_malformed_cookie_is_simply_not_signed_in(app, user, value):
    r = with_only(app, value).get("/account")
    assert r.status_code == 302


# -- item 10: max_age, prompt=login and auth_time after a restoration ------------------------


def test_a_restored_session_keeps_auth_time_and_max_age_asks_again(idp, monkeypatch):
    """OpenID Connect Core 3.1.2.1: max_age counts from the sign-in, not the restoration."""
    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    page = person.open(app.authorization_url())
    first = app.redeem(
        person.submit(page, {"username": "alice", "password": PASSWORD, "remember": "y"})
    )
    original = app.verify(first["id_token"]).claims
    # Two minutes later the browser restarts: only the remember-me cookie is left.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)
    for cookie in list(person.http.cookies):
        if cookie.name == SESSION:
            person.http.cookies.clear(cookie.domain, cookie.path, cookie.name)
    again = app.redeem(person.open(app.authorization_url()))
    claims = app.verify(again["id_token"]).claims
    assert claims["auth_time"] == original["auth_time"]
    assert claims["amr"] == original["amr"] == ["pwd"]
    # The app wants a sign-in at most a minute old: the password is asked again.
    page = person.open(app.authorization_url(max_age="60"))
    assert "/login" in page.final and page.status_code == 200
    fresh = app.redeem(person.sign_in(page))
    assert app.verify(fresh["id_token"]).claims["auth_time"] >= original["auth_time"] + 120


def test_prompt_login_asks_a_restored_session_for_a_credential(idp):
    app = App(idp, register(idp, skip_consent=True))
    person = Person(idp)
    page = person.open(app.authorization_url())
    app.redeem(person.submit(page, {"username": "alice", "password": PASSWORD, "remember": "y"}))
    for cookie in list(person.http.cookies):
        if cookie.name == SESSION:
            person.http.cookies.clear(cookie.domain, cookie.path, cookie.name)
    page = person.open(app.authorization_url(prompt="login"))
    assert "/login" in page.final and page.status_code == 200


def test_restored_session_has_a_server_side_record(app, browser, user):
    remembered(browser)
    restart(browser)
    assert signed_in(browser)
    sid = session_of(app, browser)["sid"]
    with app.app_context():
        row = db.session.get(BrowserSession, sid)
        assert row is not None and row.series and row.user_id == user.id
