"""Empty, overlong, non-UTF-8 and control-character input in every field, and duplicates:
a specific message and status, never a 500, and nothing stored changes."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from conftest import PASSWORD, csrf_from
from identity.extensions import db
from identity.models import PasswordReset, User

TEN_KB = "x" * 10_240
CONTROL = "ali\x00ce\x07"

REGISTER_OK = {
    "username": "bob",
    "email": "bob@example.org",
    "password": PASSWORD,
    "confirm": PASSWORD,
}


def snapshot(app) -> list[tuple]:
    with app.app_context():
        return [
            (u.username, u.email_key, u.password_hash, u.session_epoch, u.disabled)
            for u in db.session.scalars(select(User).order_by(User.id))
        ]


# (field, value, expected message)
REGISTER_CASES = [
    ("username", "", "Enter a username."),
    ("username", TEN_KB, "Use 2 to 64 characters."),
    ("username", CONTROL, "Contains characters that cannot be used"),
    ("username", "bob smith", "Use letters, digits"),
    ("username", "bob@example.org", "Use letters, digits"),
    ("email", "", "Enter an e-mail address."),
    ("email", TEN_KB + "@example.org", "Use at most 254 characters."),
    ("email", "bob\x00@example.org", "Contains characters that cannot be used"),
    ("email", "not-an-address", "Enter a valid e-mail address"),
    ("password", "", "Enter a password."),
    ("password", TEN_KB, "Use at most 1024 characters."),
    ("password", "correct horse\x00battery", "Contains characters that cannot be used"),
    ("password", "short", "Use at least 12 characters."),
    ("password", "BOB@example.org", "cannot be your e-mail address"),
    ("confirm", "", "Repeat the password."),
    ("confirm", "something else entirely", "The two passwords differ."),
]


@pytest.mark.parametrize("field,value,message", REGISTER_CASES)
def test_register_bad_field(app, browser, user, field, value, message):
    before = snapshot(app)
    data = {**REGISTER_OK, field: value}
    if field == "password":
        data["confirm"] = value
    r = browser.post("/register", data)
    assert r.status_code == 400
    assert message in r.get_data(as_text=True)
    assert snapshot(app) == before


def test_password_equal_to_username_is_refused(app, browser):
    r = browser.post(
        "/register",
        {
            **REGISTER_OK,
            "username": "longusername12",
            "password": "LongUsername12",
            "confirm": "LongUsername12",
        },
    )
    assert r.status_code == 400
    assert "cannot be your username" in r.get_data(as_text=True)


@pytest.mark.parametrize(
    "username,email,message",
    [
        ("ALICE", "other@example.org", "That username is taken."),
        ("someone", "ALICE@example.ORG", "An account already uses this e-mail address."),
    ],
)
def test_register_duplicates_are_case_insensitive(app, browser, user, username, email, message):
    before = snapshot(app)
    r = browser.post("/register", {**REGISTER_OK, "username": username, "email": email})
    assert r.status_code == 400
    assert message in r.get_data(as_text=True)
    assert snapshot(app) == before


def test_register_race_lost_at_the_database_is_a_clear_message(app, browser, user, monkeypatch):
    """The uniqueness check passed but the insert collides (a concurrent registration)."""
    from identity.auth import accounts

    monkeypatch.setattr(accounts, "find", lambda *a, **k: None)
    monkeypatch.setattr(accounts, "email_taken", lambda *a: False)
    before = snapshot(app)
    r = browser.post("/register", {**REGISTER_OK, "username": "alice"})
    assert r.status_code == 400
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("username", "", "Enter your username or e-mail address."),
        ("username", TEN_KB, "That is too long for a username or e-mail address."),
        ("username", CONTROL, "Contains characters that cannot be used"),
        ("password", "", "Enter your password."),
        ("password", TEN_KB, "That is too long for a password."),
        ("password", "pass\x1bword", "Contains characters that cannot be used"),
    ],
)
def test_login_bad_field(app, browser, user, field, value, message):
    before = snapshot(app)
    r = browser.login(**{field: value})
    assert r.status_code == 400
    assert message in r.get_data(as_text=True)
    assert snapshot(app) == before


@pytest.mark.parametrize("path", ["/login", "/register", "/reset"])
def test_non_utf8_form_body_is_refused(app, browser, user, path):
    before = snapshot(app)
    token = browser.csrf(path)
    for raw in (b"%FF%FE", b"\xff\xfe"):
        body = urlencode({"csrf_token": token, "email": "a@example.org", "confirm": "x"}).encode()
        body += b"&username=" + raw + b"&password=" + raw
        r = browser.client.post(
            path,
            data=body,
            content_type="application/x-www-form-urlencoded",
            headers={"Referer": f"https://localhost{path}"},
        )
        assert r.status_code == 400
        assert "not valid UTF-8" in r.get_data(as_text=True)
    assert snapshot(app) == before


def test_non_utf8_in_multipart_is_refused_by_the_field(app, browser, user):
    token = browser.csrf("/login")
    r = browser.client.post(
        "/login",
        data={
            "csrf_token": token,
            "username": "alice",
            "password": (__import__("io").BytesIO(b"x"), "x"),
        },
        headers={"Referer": "https://localhost/login"},
        content_type="multipart/form-data",
    )
    assert r.status_code == 400


@pytest.mark.parametrize("body", ['{"username": 5, "password": ["a"]}', "[1, 2]", "{not json"])
def test_json_bodies_are_not_form_input(app, browser, user, body):
    token = browser.csrf("/login")
    r = browser.client.post(
        "/login",
        data=body,
        content_type="application/json",
        headers={"Referer": "https://localhost/login", "X-CSRFToken": token},
    )
    assert r.status_code == 400


def test_oversized_body_is_413(app, browser, user):
    before = snapshot(app)
    r = browser.post("/register", {**REGISTER_OK, "username": "y" * 70_000})
    assert r.status_code == 413
    assert "too large" in r.get_data(as_text=True)
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "value,message",
    [
        ("", "Enter an e-mail address."),
        (TEN_KB, "Use at most 254 characters."),
        ("a\x00@example.org", "Contains characters that cannot be used"),
        ("nope", "Enter a valid e-mail address"),
    ],
)
def test_reset_request_bad_email(app, browser, user, value, message):
    r = browser.post("/reset", {"email": value})
    assert r.status_code == 400
    assert message in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(PasswordReset).count() == 0


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("current_password", "", "Enter your current password."),
        ("current_password", TEN_KB, "That is too long for a password."),
        ("password", "", "Enter a password."),
        ("password", "\x00" * 20, "Contains characters that cannot be used"),
        ("confirm", "different but long", "The two passwords differ."),
    ],
)
def test_change_password_bad_field(app, browser, user, field, value, message):
    browser.login()
    before = snapshot(app)
    data = {
        "current_password": PASSWORD,
        "password": "new long password 1",
        "confirm": "new long password 1",
        field: value,
    }
    r = browser.post("/account/password", data, token_from="/account")
    assert r.status_code == 400
    assert message in r.get_data(as_text=True)
    assert snapshot(app) == before


def test_pages_render_escaped_input(browser):
    r = browser.post("/register", {**REGISTER_OK, "email": "<script>alert(1)</script>"})
    html = r.get_data(as_text=True)
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html


def test_csrf_token_is_needed_even_for_bad_input(browser):
    r = browser.post("/login", {"username": CONTROL}, csrf=False)
    assert r.status_code == 400
    assert "This form has expired" in r.get_data(as_text=True)
    assert csrf_from(browser.get("/login").get_data(as_text=True))
