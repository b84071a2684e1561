"""People see where they are signed in (sessions and remembered devices: started, last seen,
address, browser, method) and end any one of them, or all others; so do admins, with their
password. An ended session is refused at once and its apps' tokens are revoked; "last seen"
costs no write per request."""

from __future__ import annotations

import time

import pytest
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import event, select, update

from conftest import PASSWORD, Browser, https_client
from identity import useragent
from identity.auth import accounts
from identity.extensions import db
from identity.models import BrowserSession, RememberToken, Token

FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)


def browser_as(app, agent: str) -> Browser:
    client = https_client(app)
    client.environ_base["HTTP_USER_AGENT"] = agent
    return Browser(client)


def sid_of(app, browser: Browser) -> str:
    cookie = browser.client.get_cookie("__Host-session")
    return SecureCookieSessionInterface().get_signing_serializer(app).loads(cookie.value)["sid"]


def signed_in(browser: Browser) -> bool:
    return browser.get("/account").status_code == 200


def add_token(app, user_id: int, sid: str) -> int:
    with app.app_context():
        token = Token(
            client_id="some-app",
            token_type="Bearer",
            access_token=f"jti-{sid}",
            refresh_token=None,
            scope="openid",
            issued_at=int(time.time()),
            expires_in=3600,
            user_id=user_id,
            grant_id=f"g-{sid}",
            sid=sid,
        )
        db.session.add(token)
        db.session.commit()
        return token.id


def revoked(app, token_id: int) -> bool:
    with app.app_context():
        return db.session.get(Token, token_id).access_token_revoked_at != 0


@pytest.mark.parametrize(
    "agent,label",
    [
        (FIREFOX_WINDOWS, "Firefox on Windows"),
        (SAFARI_IPHONE, "Safari on iOS"),
        (EDGE, "Edge on Windows"),
        (CHROME_ANDROID, "Chrome on Android"),
        ("curl/8.5.0", "curl"),
        ("", "Unknown browser"),
        (None, "Unknown browser"),
        ("<script>alert(1)</script>", "Unknown browser"),
    ],
)
def test_user_agents_read_as_short_labels(agent, label):
    assert useragent.label(agent) == label


def test_the_account_page_lists_sessions_and_remembered_devices(app, user):
    laptop = browser_as(app, FIREFOX_WINDOWS)
    laptop.login()
    phone = browser_as(app, SAFARI_IPHONE)
    phone.login(remember="y")
    page = laptop.get("/account").get_data(as_text=True)
    assert "Where you are signed in" in page
    assert "Firefox on Windows" in page and "Safari on iOS" in page
    assert "This browser" in page and "from 127.0.0.1" in page and "Password" in page
    assert "started " in page and "last seen " in page
    assert "Remembered devices" in page and "last used " in page
    assert 'action="/account/sessions/end-others"' in page
    # This browser's own line has no button: Sign out is for that.
    assert f'action="/account/sessions/{sid_of(app, laptop)}/end"' not in page
    assert f'action="/account/sessions/{sid_of(app, phone)}/end"' in page


def test_a_hostile_user_agent_is_never_shown_raw(app, user):
    evil = browser_as(app, '<img src=x onerror="alert(1)">Firefox/1')
    evil.login()
    page = evil.get("/account").get_data(as_text=True)
    assert "onerror" not in page and "Firefox" in page


def test_ending_one_session_signs_that_browser_out_everywhere_with_its_apps_tokens(app, user):
    laptop, phone = browser_as(app, FIREFOX_WINDOWS), browser_as(app, SAFARI_IPHONE)
    laptop.login()
    phone.login(remember="y")
    phone_sid = sid_of(app, phone)
    token = add_token(app, user.id, phone_sid)
    keep = add_token(app, user.id, sid_of(app, laptop))
    r = laptop.post(f"/account/sessions/{phone_sid}/end", token_from="/account")
    assert r.status_code == 303 and r.headers["Location"] == "/account#sessions"
    assert "That session is signed out." in laptop.get("/account").get_data(as_text=True)
    assert not signed_in(phone)  # and its remember-me cookie does not bring it back
    assert revoked(app, token) and not revoked(app, keep)
    assert signed_in(laptop)


def test_sign_out_everywhere_else_keeps_this_browser_and_its_remembered_device(app, user):
    mine, b, c = (browser_as(app, a) for a in (FIREFOX_WINDOWS, SAFARI_IPHONE, EDGE))
    mine.login(remember="y")
    b.login(remember="y")
    c.login()
    r = mine.post("/account/sessions/end-others", token_from="/account")
    assert r.status_code == 303
    assert not signed_in(b) and not signed_in(c)
    assert signed_in(mine)
    mine.client.delete_cookie("__Host-session")
    assert signed_in(mine)  # still remembered
    with app.app_context():
        assert len(db.session.scalars(select(RememberToken)).all()) == 1
        assert len(db.session.scalars(select(BrowserSession)).all()) == 1


def test_forgetting_a_remembered_device_ends_it_and_the_session_it_restored(app, user):
    mine, phone = browser_as(app, FIREFOX_WINDOWS), browser_as(app, SAFARI_IPHONE)
    mine.login()
    phone.login(remember="y")
    phone.client.delete_cookie("__Host-session")
    assert signed_in(phone)  # a restored session
    with app.app_context():
        (device,) = db.session.scalars(select(RememberToken)).all()
    r = mine.post(f"/account/devices/{device.id}/forget", token_from="/account")
    assert r.status_code == 303
    assert not signed_in(phone)


def test_nobody_ends_anothers_sessions_from_their_account_page(app, user):
    with app.app_context():
        accounts.create_local("bob", "bob@example.org", PASSWORD)
    alice = browser_as(app, FIREFOX_WINDOWS)
    alice.login(remember="y")
    bob = Browser(https_client(app))
    bob.login("bob")
    with app.app_context():
        (device,) = db.session.scalars(select(RememberToken)).all()
    bob.post(f"/account/sessions/{sid_of(app, alice)}/end", token_from="/account")
    bob.post(f"/account/devices/{device.id}/forget", token_from="/account")
    for bad in ("nope", "9" * 30, "%00"):
        r = bob.post(f"/account/devices/{bad}/forget", token_from="/account")
        assert r.status_code == 303
        r = bob.post(f"/account/sessions/{bad}/end", token_from="/account")
        assert r.status_code == 303
    assert signed_in(alice)
    alice.client.delete_cookie("__Host-session")
    assert signed_in(alice)


def test_last_seen_is_written_at_most_once_a_minute(app, browser, user):
    browser.login()
    sid = sid_of(app, browser)
    with app.app_context():
        engine = db.engine
    writes = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE BROWSER_SESSIONS"):
            writes.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(20):
            assert signed_in(browser)
        assert writes == []
        with app.app_context():
            db.session.execute(
                update(BrowserSession).values(last_seen_at=BrowserSession.last_seen_at - 61)
            )
            db.session.commit()
        writes.clear()  # that one was the test's own
        assert signed_in(browser) and signed_in(browser)
        assert len(writes) == 1
    finally:
        event.remove(engine, "before_cursor_execute", count)
    with app.app_context():
        assert abs(db.session.get(BrowserSession, sid).last_seen_at - time.time()) < 5


def test_the_admin_user_page_lists_and_ends_a_session_with_the_password(app, user):
    with app.app_context():
        root = accounts.create_local("root", "root@example.org", PASSWORD)
        root.is_admin = True
        db.session.commit()
    admin = Browser(https_client(app))
    admin.login("root")
    phone = browser_as(app, SAFARI_IPHONE)
    phone.login(remember="y")
    sid = sid_of(app, phone)
    page = admin.get(f"/admin/users/{user.id}").get_data(as_text=True)
    assert "Sessions and remembered devices" in page and "Safari on iOS" in page
    path = f"/admin/users/{user.id}/sessions/{sid}/end"
    assert f'href="{path}"' in page
    r = admin.post(path, {"admin_password": "wrong"})
    assert r.status_code == 400 and signed_in(phone)
    r = admin.post(path, {"admin_password": PASSWORD})
    assert r.status_code == 303
    assert not signed_in(phone)
    assert admin.get(path).status_code == 404  # already ended


def test_the_admin_forgets_a_remembered_device_with_the_password(app, user):
    with app.app_context():
        root = accounts.create_local("root", "root@example.org", PASSWORD)
        root.is_admin = True
        db.session.commit()
    admin = Browser(https_client(app))
    admin.login("root")
    phone = browser_as(app, SAFARI_IPHONE)
    value = (phone.login(remember="y"), phone.client.get_cookie("__Host-remember").value)[1]
    with app.app_context():
        (device,) = db.session.scalars(select(RememberToken)).all()
    path = f"/admin/users/{user.id}/devices/{device.id}/forget"
    assert f'href="{path}"' in admin.get(f"/admin/users/{user.id}").get_data(as_text=True)
    assert admin.post(path, {}).status_code == 400
    assert admin.post(path, {"admin_password": PASSWORD}).status_code == 303
    thief = Browser(https_client(app))
    thief.client.set_cookie("__Host-remember", value, secure=True, path="/")
    assert not signed_in(thief) and not signed_in(phone)
