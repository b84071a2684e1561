"""E-mail verification: registration mails a single-use, expiring link bound to the address
it was sent to; only that link makes the address verified. A real SMTP server (aiosmtpd)
receives the mail."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from conftest import PASSWORD
from identity.auth import verification
from identity.extensions import db
from identity.models import EmailVerification, Event, User
from identity.models.users import utcnow

LINK_RE = re.compile(r"https://idp\.test/verify-email/[A-Za-z0-9_-]{40,}")


@pytest.fixture
def app_overrides(smtp):
    controller, _ = smtp
    return {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": controller.port,
        "MAIL_USE_STARTTLS": False,
        "MAIL_SENDER": "Identity <idp@idp.test>",
    }


def register(browser, username="bob", email="Bob@Example.org"):
    return browser.post(
        "/register",
        {"username": username, "email": email, "password": PASSWORD, "confirm": PASSWORD},
    )


def links_in(inbox, n=1) -> list[str]:
    messages = inbox.wait(n)
    assert len(messages) == n, f"{len(messages)} messages, expected {n}"
    return [
        LINK_RE.search(m.get_payload(decode=True).decode())
        .group(0)
        .removeprefix("https://idp.test")
        for m in messages
    ]


def verified(app, username="bob") -> bool:
    with app.app_context():
        return db.session.scalar(select(User).where(User.username == username)).email_verified


def text(response) -> str:
    return response.get_data(as_text=True)


def test_registration_mails_a_link_that_verifies_the_address_once(app, browser, smtp):
    _, inbox = smtp
    r = register(browser)
    assert r.status_code == 302
    (message,) = inbox.wait(1)
    assert message["To"] == "Bob@Example.org"
    assert message["Subject"] == "Identity: Verify your e-mail address"
    assert "within 24 hours" in message.get_payload(decode=True).decode()
    (path,) = links_in(inbox)
    page = text(browser.get("/account"))
    assert "(not verified)" in page and "Send a verification link" in page
    assert not verified(app)

    # Opening the link asks to confirm: a mail scanner fetching it verifies nothing.
    r = browser.get(path)
    assert r.status_code == 200 and "Verify Bob@Example.org" in text(r)
    assert not verified(app)
    r = browser.post(path)
    assert r.status_code == 302
    assert verified(app)
    page = text(browser.get("/account"))
    assert "Your e-mail address Bob@Example.org is verified." in page
    assert "(verified)" in page and "Send a verification link" not in page

    # Single use: the same link again is refused with a page that says so.
    for again in (browser.get(path), browser.post(path, token_from="/account")):
        assert again.status_code == 400 and "already been used" in text(again)
    with app.app_context():
        assert {"email.verification_sent", "email.verified"} <= {e.type for e in Event.query}


def test_only_the_hash_of_the_token_is_stored(app, browser, smtp):
    _, inbox = smtp
    register(browser)
    (path,) = links_in(inbox)
    token = path.rsplit("/", 1)[1]
    with app.app_context():
        (row,) = db.session.scalars(select(EmailVerification)).all()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in repr([getattr(row, c.key) for c in EmailVerification.__table__.c])
        assert row.email_key == "bob@example.org"
        assert timedelta(hours=23, minutes=59) < row.expires_at - row.created_at
        assert row.expires_at - row.created_at <= timedelta(hours=24)


def test_unknown_tampered_and_expired_links_give_a_clear_page(app, browser, smtp):
    _, inbox = smtp
    register(browser)
    (path,) = links_in(inbox)
    tampered = path[:-1] + ("A" if path[-1] != "A" else "B")
    for bad in (tampered, "/verify-email/x", "/verify-email/" + "a" * 500):
        r = browser.get(bad)
        assert r.status_code == 400 and "not valid" in text(r) and "Traceback" not in text(r)
    r = browser.post(tampered, token_from="/account")
    assert r.status_code == 400 and "not valid" in text(r)
    with app.app_context():
        row = db.session.scalar(select(EmailVerification))
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    for r in (browser.get(path), browser.post(path, token_from="/account")):
        assert r.status_code == 400 and "expired" in text(r)
    assert not verified(app)


def test_a_link_verifies_only_the_address_it_was_sent_to(app, browser, smtp):
    _, inbox = smtp
    register(browser)
    (path,) = links_in(inbox)
    with app.app_context():
        bob = db.session.scalar(select(User).where(User.username == "bob"))
        bob.set_email("bob@elsewhere.example")
        db.session.commit()
    for r in (browser.get(path), browser.post(path, token_from="/account")):
        assert r.status_code == 400 and "no longer uses" in text(r)
    assert not verified(app)


def test_a_changed_address_is_unverified_again(app, browser, smtp):
    _, inbox = smtp
    register(browser)
    (path,) = links_in(inbox)
    browser.get(path)
    browser.post(path)
    assert verified(app)
    with app.app_context():
        bob = db.session.scalar(select(User).where(User.username == "bob"))
        bob.set_email("BOB@example.org")  # the same address in other letters: still verified
        assert bob.email_verified
        bob.set_email("bob@elsewhere.example")
        db.session.commit()
    assert not verified(app)


def test_a_link_claimed_by_a_concurrent_request_is_used_once(app, browser, smtp):
    """Two requests that both looked the link up: only the first verifies."""
    _, inbox = smtp
    register(browser)
    (path,) = links_in(inbox)
    token = path.rsplit("/", 1)[1]
    with app.test_request_context():
        first, _ = verification.lookup(token)
        second, _ = verification.lookup(token)
        assert verification.complete(first) is None
        assert verification.complete(second) == verification.USED
        assert db.session.query(Event).filter_by(type="email.verified").count() == 1


def test_resend_from_the_account_page_is_limited(app, browser, user, smtp):
    _, inbox = smtp
    browser.login()
    page = text(browser.get("/account"))
    assert "(not verified)" in page
    for n in range(1, verification.RESEND_LIMIT + 1):
        r = browser.post("/account/verify-email", token_from="/account")
        assert r.status_code == 302, text(r)
        assert len(inbox.wait(n)) == n
    assert "on its way to Alice@Example.org" in text(browser.get("/account"))
    r = browser.post("/account/verify-email", token_from="/account")
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 3600
    assert "Several links were sent to Alice@Example.org in the last hour" in text(r)
    assert len(inbox.wait(verification.RESEND_LIMIT + 1, timeout=0.5)) == verification.RESEND_LIMIT
    # Any of the links verifies; then there is nothing to resend.
    links = links_in(inbox, verification.RESEND_LIMIT)
    assert browser.post(links[2]).status_code == 302
    assert verified(app, "alice")
    for other in links[:2] + links[3:]:
        assert "already been used" in text(browser.get(other))
    r = browser.post("/account/verify-email", token_from="/account")
    assert r.status_code == 302
    assert "already verified" in text(browser.get("/account"))


def test_resend_needs_post_with_csrf_and_a_session(app, browser, user, smtp):
    _, inbox = smtp
    assert browser.post("/account/verify-email", csrf=False).status_code in (302, 400)
    browser.login()
    assert browser.get("/account/verify-email").status_code == 405
    assert browser.post("/account/verify-email", csrf=False).status_code == 400
    assert inbox.wait(1, timeout=0.3) == []


@pytest.mark.parametrize("app_overrides", [{"REGISTRATION_EMAIL_VERIFICATION": False}])
def test_without_verification_no_mail_and_the_address_stays_unverified(app, browser):
    r = register(browser)
    assert r.status_code == 302
    page = text(browser.get("/account"))
    assert "(not verified)" in page and "Send a verification link" not in page
    assert browser.post("/account/verify-email", token_from="/account").status_code == 404
    assert not verified(app)
    with app.app_context():
        assert db.session.query(EmailVerification).count() == 0


@pytest.fixture
def idp_settings(app_overrides):
    return app_overrides


def test_apps_see_email_verified_false_until_the_link_is_used(idp, smtp):
    """As an app sees it, over HTTPS: the ID token and userinfo say email_verified=false,
    then true once the person has used the link from their mailbox."""
    from oidc_rp import App, Person, register, sign_in_and_allow

    _, inbox = smtp
    app = App(idp, register(idp))
    person = Person(idp)

    def claims() -> tuple[bool, bool]:
        token = app.redeem(sign_in_and_allow(person, app))
        id_claims = app.verify(token["id_token"]).claims
        info = app.session.get(f"{idp.url}/userinfo", verify=idp.ca).json()
        assert id_claims["email"] == info["email"] == "alice@example.org"
        return id_claims["email_verified"], info["email_verified"]

    assert claims() == (False, False)
    account = person.open(f"{idp.url}/account")
    person.submit(account, {}, action="/account/verify-email")
    (message,) = inbox.wait(1)
    link = re.search(
        r"https://localhost:\d+/verify-email/\S+", message.get_payload(decode=True).decode()
    )
    confirm = person.open(link.group(0))
    assert "Verify alice@example.org" in confirm.text
    person.submit(confirm, {})
    assert claims() == (True, True)


def test_settings_default_on_and_refuse_nonsense(tmp_path, monkeypatch):
    from flask import Flask

    import config

    def load(**env):
        for key in list(os.environ):
            if key.startswith("IDP_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(f"IDP_{key}", value)
        flask_app = Flask("t", instance_path=str(tmp_path / "instance"))
        config.load(flask_app)
        return flask_app.config

    cfg = load()
    assert cfg["REGISTRATION_EMAIL_VERIFICATION"] is True
    assert cfg["EMAIL_VERIFICATION_MAX_AGE"] == 24 * 3600
    assert load(REGISTRATION_EMAIL_VERIFICATION="false")["REGISTRATION_EMAIL_VERIFICATION"] is False
    for env, message in (
        ({"REGISTRATION_EMAIL_VERIFICATION": "yes"}, "must be true or false"),
        ({"EMAIL_VERIFICATION_MAX_AGE": "10"}, "must be at least 60 seconds"),
        ({"EMAIL_VERIFICATION_MAX_AGE": '"a day"'}, "must be a whole number"),
    ):
        with pytest.raises(config.ConfigError, match=f"IDP_[A-Z_]+ {message}"):
            load(**env)


def test_short_lived_links_still_count_towards_the_resend_limit(app, browser, user, smtp):
    """Links that expired within the hour are still counted: with a 60-second lifetime,
    waiting a minute between requests gives no more mails."""
    _, inbox = smtp
    app.config["EMAIL_VERIFICATION_MAX_AGE"] = 60
    browser.login()
    for n in range(1, verification.RESEND_LIMIT + 1):
        assert browser.post("/account/verify-email", token_from="/account").status_code == 302
        with app.app_context():  # every link sent so far has expired
            for row in db.session.scalars(select(EmailVerification)):
                row.expires_at = row.created_at = utcnow() - timedelta(minutes=n)
            db.session.commit()
    r = browser.post("/account/verify-email", token_from="/account")
    assert r.status_code == 429
    assert len(inbox.wait(verification.RESEND_LIMIT + 1, timeout=0.5)) == verification.RESEND_LIMIT


def test_an_address_changed_between_lookup_and_use_is_not_verified(app, browser, smtp):
    """The link is checked against the address again in the UPDATE that verifies it."""
    _, inbox = smtp
    register(browser)
    (path,) = links_in(inbox)
    with app.test_request_context():
        found, problem = verification.lookup(path.rsplit("/", 1)[1])
        assert problem is None
        db.session.execute(
            User.__table__.update()
            .where(User.username == "bob")
            .values(email="bob@elsewhere.example", email_key="bob@elsewhere.example")
        )
        assert verification.complete(found) == verification.CHANGED
    assert not verified(app)
