"""Register, sign in, sign out, remember me, account page, change password."""

from __future__ import annotations

from datetime import UTC, datetime

from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import select

from conftest import PASSWORD, Browser, https_client
from identity.extensions import db
from identity.models import Event, LinkedIdentity, User

NEW_PASSWORD = "a brand new passphrase 42"


def session_of(app, client) -> dict:
    cookie = client.get_cookie("__Host-session")
    if cookie is None:
        return {}
    return dict(SecureCookieSessionInterface().get_signing_serializer(app).loads(cookie.value))


def register(
    browser: Browser,
    username="bob",
    email="bob@example.org",
    password=PASSWORD,
    confirm=None,
    **extra,
):
    return browser.post(
        "/register",
        {
            "username": username,
            "email": email,
            "password": password,
            "confirm": password if confirm is None else confirm,
            **extra,
        },
    )


def test_register_creates_account_signs_in_and_links_local_method(app, browser):
    r = register(browser, username="Bob", email="Bob@Example.org")
    assert r.status_code == 302 and r.headers["Location"] == "/account"
    page = browser.get("/account").get_data(as_text=True)
    assert "bob" in page and "Bob@Example.org" in page and "Password" in page
    with app.app_context():
        user = User.query.filter_by(username="bob").one()
        assert user.email_key == "bob@example.org"
        assert user.password_hash.startswith("$argon2id$")
        assert [(link.connector, link.subject) for link in user.links] == [("local", str(user.id))]


def test_register_refuses_common_passwords_and_ones_built_on_the_username(app, browser):
    for password, message in [
        ("Password1234!", "among the most common ones"),
        ("bob-bob-2024!", "built on your username"),
        ("aaaaaaaaaaaa", "too regular"),
    ]:
        r = register(browser, password=password)
        assert r.status_code == 400 and message in r.get_data(as_text=True), password
    with app.app_context():
        assert User.query.filter_by(username="bob").first() is None


def test_register_follows_safe_next_only(browser):
    r = register(browser, next="/account?tab=1")
    assert r.headers["Location"] == "/account?tab=1"
    browser.logout()
    r = register(browser, username="carol", email="carol@example.org", next="https://evil.example/")
    assert r.headers["Location"] == "/account"


def test_login_page_has_form_and_no_provider_buttons(browser):
    html = browser.get("/login").get_data(as_text=True)
    assert 'name="username"' in html and 'name="password"' in html
    assert 'autocomplete="current-password"' in html
    assert "Continue with" not in html  # no social provider is configured


def test_sign_in_with_username_or_email_any_case(browser, user):
    assert browser.login("ALICE").headers["Location"] == "/account"
    browser.logout()
    assert browser.login("alice@EXAMPLE.org").headers["Location"] == "/account"


def test_wrong_password_and_unknown_user_get_the_same_answer(browser, user):
    wrong = browser.login("alice", "not the password at all")
    unknown = browser.login("nobody", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password." in wrong.get_data(as_text=True)
    # Same page apart from the per-request CSRF token and the echoed username.
    strip = lambda r, name: r.get_data(as_text=True).replace(name, "").split('name="csrf_token"')[0]  # noqa: E731
    assert strip(wrong, "alice") == strip(unknown, "nobody")


def test_every_failed_sign_in_costs_one_hash_verification(browser, user, monkeypatch):
    """Same work whether the account exists or not: that is what keeps the timing equal."""
    from argon2 import PasswordHasher

    calls = []
    real = PasswordHasher.verify
    monkeypatch.setattr(
        PasswordHasher, "verify", lambda self, h, p: calls.append(h) or real(self, h, p)
    )
    browser.login("nobody", "whatever password 1")
    browser.login("alice", "whatever password 2")
    assert len(calls) == 2
    assert calls[0] != calls[1]  # a dummy hash for the unknown user, the real one for alice


def test_session_is_renewed_at_sign_in_and_cleared_at_sign_out(app, browser, user):
    browser.get("/login")
    before = session_of(app, browser.client)
    before_token = before["csrf_token"]
    browser.login()
    after = session_of(app, browser.client)
    assert after.get("csrf_token") != before_token
    assert after["_user_id"].startswith(f"{user.id}.")
    assert after["amr"] == ["pwd"] and after["connector"] == "local"
    assert abs(after["auth_time"] - datetime.now(UTC).timestamp()) < 60
    assert len(after["sid"]) >= 16
    r = browser.logout()
    assert r.status_code == 302 and r.headers["Location"] == "/login"
    assert "_user_id" not in session_of(app, browser.client)
    assert browser.get("/account").status_code == 302


def test_sign_out_requires_post(browser, user):
    browser.login()
    assert browser.get("/logout").status_code == 405
    assert browser.get("/account").status_code == 200  # still signed in


def test_account_requires_sign_in_and_comes_back(browser, user):
    r = browser.get("/account")
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/account"
    r = browser.login(next="/account")
    assert r.headers["Location"] == "/account"


def test_session_cookie_flags(browser, user):
    r = browser.login()
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("__Host-session="))
    assert "; Secure" in cookie and "; HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie and "Domain" not in cookie
    assert not any(c.startswith("__Host-remember=") for c in r.headers.getlist("Set-Cookie"))


def test_remember_me_sets_cookie_with_configured_duration(app, browser, user):
    r = browser.login(remember="y")
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("__Host-remember="))
    assert "; Secure" in cookie and "; HttpOnly" in cookie
    expires = datetime.strptime(
        cookie.split("Expires=")[1].split(";")[0], "%a, %d %b %Y %H:%M:%S GMT"
    )
    days = (expires - datetime.now(UTC).replace(tzinfo=None)).total_seconds() / 86400
    assert 13.9 < days <= 14.0
    # Without the session cookie, the remember cookie alone signs the browser back in.
    browser.client.delete_cookie("__Host-session")
    assert browser.get("/account").status_code == 200


def test_disabled_account_cannot_sign_in(app, browser, user):
    with app.app_context():
        db.session.get(User, user.id).disabled = True
        db.session.commit()
    r = browser.login()
    assert r.status_code == 403
    assert "disabled" in r.get_data(as_text=True)


def test_disabling_ends_existing_session(app, browser, user):
    browser.login()
    with app.app_context():
        u = db.session.get(User, user.id)
        u.disabled = True
        u.end_sessions()
        db.session.commit()
    assert browser.get("/account").status_code == 302


def test_change_password_keeps_this_session_and_ends_others(app, client, browser, user):
    other = Browser(https_client(app))
    other.login(remember="y")
    browser.login()
    r = browser.post(
        "/account/password",
        {"current_password": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        token_from="/account",
    )
    assert r.status_code == 302
    assert browser.get("/account").status_code == 200
    assert other.get("/account").status_code == 302  # session and remember cookie both dead
    browser.logout()
    assert browser.login(password=PASSWORD).status_code == 401
    assert browser.login(password=NEW_PASSWORD).status_code == 302
    with app.app_context():
        types = [e.type for e in Event.query.order_by(Event.id)]
        assert "password.change" in types


def test_change_password_with_wrong_current_password_changes_nothing(app, browser, user):
    browser.login()
    with app.app_context():
        before = db.session.get(User, user.id).password_hash
    r = browser.post(
        "/account/password",
        {"current_password": "not my password!", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        token_from="/account",
    )
    assert r.status_code == 400
    assert "That is not your current password." in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, user.id).password_hash == before


def test_change_password_policy(browser, user):
    browser.login()
    for new, message in [
        ("short", "Use at least 12 characters."),
        ("alice@example.org", "cannot be your e-mail address"),
        ("Password1234!", "among the most common ones"),
        ("alice-2024-!!", "built on your username"),
        ("x" * 1025, "Use at most 1024 characters."),
    ]:
        r = browser.post(
            "/account/password",
            {"current_password": PASSWORD, "password": new, "confirm": new},
            token_from="/account",
        )
        assert r.status_code == 400
        assert message in r.get_data(as_text=True)


def test_index_redirects_by_state(browser, user):
    assert browser.get("/").headers["Location"] == "/login"
    browser.login()
    assert browser.get("/").headers["Location"] == "/account"
    assert browser.get("/login").headers["Location"] == "/account"


def test_audit_records_sign_in_success_and_failure_without_secrets(app, browser, user):
    browser.login(password="wrong password here")
    browser.login()
    with app.app_context():
        events = Event.query.order_by(Event.id).all()
    kinds = [(e.type, e.data.get("reason")) for e in events]
    assert ("signin.failure", "bad_credentials") in kinds
    assert ("signin.success", None) in kinds
    dumped = repr([e.data for e in events])
    assert "wrong password here" not in dumped and PASSWORD not in dumped


def test_local_link_is_unique_per_subject(app, user):
    from sqlalchemy.exc import IntegrityError

    with app.app_context():
        db.session.add(LinkedIdentity(user_id=user.id, connector="local", subject=str(user.id)))
        try:
            db.session.commit()
            raise AssertionError("a second link with the same (connector, subject) was stored")
        except IntegrityError:
            db.session.rollback()
        assert len(db.session.scalars(select(LinkedIdentity)).all()) == 1


def test_sign_out_also_ends_remember_me(browser, user):
    browser.login(remember="y")
    r = browser.logout()
    cleared = [c for c in r.headers.getlist("Set-Cookie") if c.startswith("__Host-remember=")]
    assert cleared and "Expires=Thu, 01 Jan 1970" in cleared[0]
    assert browser.client.get_cookie("__Host-remember") is None
    assert browser.get("/account").status_code == 302


def test_session_without_remember_me_is_a_browser_session(browser, user):
    r = browser.login()
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("__Host-session="))
    assert "Expires=" not in cookie  # gone when the browser closes


def test_session_ends_after_its_lifetime(app, browser, user, monkeypatch):
    import time as _time

    browser.login()
    assert browser.get("/account").status_code == 200
    later = _time.time() + app.config["SESSION_LIFETIME"] + 1
    monkeypatch.setattr("identity.auth.signin.time.time", lambda: later)
    r = browser.get("/account")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")


def test_a_copy_of_the_session_cookie_is_dead_after_sign_out(browser, user):
    """ASVS 3.3.1: sign-out invalidates the session server-side, not only in this browser."""
    browser.login()
    copied = browser.client.get_cookie("__Host-session").value
    assert browser.get("/account").status_code == 200
    browser.logout()
    browser.client.set_cookie("__Host-session", copied, secure=True, path="/")
    r = browser.get("/account")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")


def test_signing_in_again_ends_the_previous_session_cookie(browser, user):
    browser.login()
    before = browser.client.get_cookie("__Host-session").value
    # A new sign-in over the old session (the form shown again, as for prompt=login).
    r = browser.post(
        "/login", {"username": "alice", "password": user.password}, token_from="/login?reauth=1"
    )
    assert r.status_code == 302
    assert browser.client.get_cookie("__Host-session").value != before
    browser.client.set_cookie("__Host-session", before, secure=True, path="/")
    assert browser.get("/account").status_code == 302
