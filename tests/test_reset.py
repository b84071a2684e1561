"""Password reset by e-mail, against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from ports import listen_port

from conftest import PASSWORD, csrf_from
from identity.extensions import db
from identity.models import Event, PasswordReset, User
from identity.models.users import utcnow

NEW = "a new and long passphrase"
LINK_RE = re.compile(r"https://idp\.test/reset/[A-Za-z0-9_-]{40,}")


@pytest.fixture
def app_overrides(request):
    if "smtp" not in request.fixturenames:
        return {}
    controller, _ = request.getfixturevalue("smtp")
    return {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": controller.port,
        "MAIL_USE_STARTTLS": False,
        "MAIL_SENDER": "Identity <idp@idp.test>",
    }


def ask_reset(browser, email="alice@example.org"):
    return browser.post("/reset", {"email": email})


def link_from(inbox) -> str:
    (message,) = inbox.wait(1)
    body = message.get_payload(decode=True).decode()
    (link,) = LINK_RE.findall(body)
    return link.removeprefix("https://idp.test")


def test_reset_by_email_end_to_end(app, browser, user, smtp):
    _, inbox = smtp
    r = ask_reset(browser)
    assert r.status_code == 200 and "If an account uses" in r.get_data(as_text=True)
    (message,) = inbox.wait(1)
    assert message["To"] == "Alice@Example.org"
    assert message["Subject"] == "Identity: Reset your password"
    assert message["From"] == "Identity <idp@idp.test>"
    path = link_from(inbox)
    assert "Choose a new password" in browser.get(path).get_data(as_text=True)
    r = browser.post(path, {"password": NEW, "confirm": NEW})
    assert r.status_code == 302 and r.headers["Location"] == "/login"
    assert browser.login(password=PASSWORD).status_code == 401
    assert browser.login(password=NEW).status_code == 302
    with app.app_context():
        assert {"password.reset_requested", "password.reset"} <= {e.type for e in Event.query}


def test_unknown_address_gets_the_same_answer_and_no_mail(app, browser, user, smtp):
    _, inbox = smtp
    known = ask_reset(browser, "alice@example.org")
    unknown = ask_reset(browser, "nobody@example.org")
    assert known.status_code == unknown.status_code == 200
    strip = lambda r, e: r.get_data(as_text=True).replace(e, "")  # noqa: E731
    assert strip(known, "alice@example.org") == strip(unknown, "nobody@example.org")
    time.sleep(0.3)
    assert len(inbox.wait(1)) == 1  # only alice's


def test_link_is_built_from_the_issuer_not_the_host_header(browser, user, smtp):
    _, inbox = smtp
    evil = "https://evil.example"
    token = csrf_from(browser.client.get("/reset", base_url=evil).get_data(as_text=True))
    r = browser.client.post(
        "/reset",
        base_url=evil,
        data={"email": "alice@example.org", "csrf_token": token},
        headers={"Referer": evil + "/reset"},
    )
    assert r.status_code == 200
    body = inbox.wait(1)[0].get_payload(decode=True).decode()
    assert "evil.example" not in body and LINK_RE.search(body)


def test_link_is_single_use(app, browser, user, smtp):
    _, inbox = smtp
    ask_reset(browser)
    path = link_from(inbox)
    assert browser.post(path, {"password": NEW, "confirm": NEW}).status_code == 302
    with app.app_context():
        after = db.session.get(User, user.id).password_hash
    r = browser.get(path)
    assert r.status_code == 400 and "already been used" in r.get_data(as_text=True)
    r = browser.post(
        path,
        {"password": "yet another long one", "confirm": "yet another long one"},
        token_from="/reset",
    )
    assert r.status_code == 400 and "already been used" in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(User, user.id).password_hash == after


def test_tampered_link_is_refused(app, browser, user, smtp):
    _, inbox = smtp
    ask_reset(browser)
    path = link_from(inbox)
    for bad in (path[:-1] + ("A" if path[-1] != "A" else "B"), "/reset/x", "/reset/" + "a" * 500):
        r = browser.get(bad)
        assert r.status_code == 400 and "not valid" in r.get_data(as_text=True)
    r = browser.post(path[:-2], {"password": NEW, "confirm": NEW}, token_from="/reset")
    assert r.status_code == 400
    assert browser.login(password=PASSWORD).status_code == 302


def test_expired_link_is_refused(app, browser, user, smtp):
    _, inbox = smtp
    ask_reset(browser)
    path = link_from(inbox)
    with app.app_context():
        reset = db.session.query(PasswordReset).one()
        reset.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    r = browser.get(path)
    assert r.status_code == 400 and "expired" in r.get_data(as_text=True)


def test_default_expiry_is_thirty_minutes(app, browser, user, smtp):
    ask_reset(browser)
    smtp[1].wait(1)
    with app.app_context():
        reset = db.session.query(PasswordReset).one()
        assert timedelta(minutes=29) < reset.expires_at - reset.created_at <= timedelta(minutes=30)
        assert len(reset.token_hash) == 64  # only the SHA-256 is stored


def test_using_one_link_kills_the_others_and_ends_sessions(app, browser, user, smtp):
    _, inbox = smtp
    ask_reset(browser)
    ask_reset(browser)
    inbox.wait(2)
    first, second = (
        LINK_RE.search(m.get_payload(decode=True).decode())
        .group(0)
        .removeprefix("https://idp.test")
        for m in inbox.messages
    )
    from conftest import Browser, https_client

    signed_in = Browser(https_client(app))
    signed_in.login()
    assert browser.post(second, {"password": NEW, "confirm": NEW}).status_code == 302
    assert "already been used" in browser.get(first).get_data(as_text=True)
    assert signed_in.get("/account").status_code == 302


def test_reset_form_applies_the_policy(browser, user, smtp):
    _, inbox = smtp
    ask_reset(browser)
    path = link_from(inbox)
    r = browser.post(path, {"password": "alice@example.org", "confirm": "alice@example.org"})
    assert r.status_code == 400 and "cannot be your e-mail address" in r.get_data(as_text=True)
    r = browser.post(path, {"password": "Password1234!", "confirm": "Password1234!"})
    assert r.status_code == 400 and "among the most common ones" in r.get_data(as_text=True)
    r = browser.post(path, {"password": NEW, "confirm": NEW + "x"})
    assert r.status_code == 400 and "differ" in r.get_data(as_text=True)
    assert browser.post(path, {"password": NEW, "confirm": NEW}).status_code == 302


def test_without_smtp_the_link_goes_to_the_log(app, browser, user, caplog):
    assert not app.config["MAIL_SERVER"]
    ask_reset(browser)
    deadline = time.monotonic() + 5
    while not LINK_RE.search(caplog.text) and time.monotonic() < deadline:
        time.sleep(0.02)
    path = LINK_RE.search(caplog.text).group(0).removeprefix("https://idp.test")
    assert browser.get(path).status_code == 200


def test_smtp_down_is_logged_and_the_page_still_answers(app, browser, user, caplog):
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=listen_port(), MAIL_USE_STARTTLS=False)
    r = ask_reset(browser)
    assert r.status_code == 200
    deadline = time.monotonic() + 5
    while "mail to" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "mail to Alice@Example.org failed: ConnectionRefusedError" in caplog.text
