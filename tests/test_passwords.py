"""argon2id at OWASP parameters, re-hashing outdated hashes, and the policy."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from conftest import PASSWORD, make_app
from identity.auth import accounts
from identity.extensions import db
from identity.models import User
from identity.passwords import hash_password, policy_errors, verify_password


def test_default_hash_is_argon2id_at_owasp_parameters(database_url, tmp_path):
    app = make_app(
        database_url, tmp_path, ARGON2_MEMORY_COST=19456, ARGON2_TIME_COST=2, ARGON2_PARALLELISM=1
    )
    with app.app_context():
        h = hash_password(PASSWORD)
        assert h.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert verify_password(h, PASSWORD) and not verify_password(h, PASSWORD + "x")


def test_outdated_hash_is_rehashed_at_next_sign_in(app, browser, user):
    weak = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1).hash(PASSWORD)
    with app.app_context():
        db.session.get(User, user.id).password_hash = weak
        db.session.commit()
    assert browser.login().status_code == 302
    with app.app_context():
        new = db.session.get(User, user.id).password_hash
    expected = (
        f"m={app.config['ARGON2_MEMORY_COST']},t={app.config['ARGON2_TIME_COST']},"
        f"p={app.config['ARGON2_PARALLELISM']}"
    )
    assert new != weak and expected in new
    browser.logout()
    assert browser.login().status_code == 302  # the new hash verifies


def test_wrong_password_does_not_rehash(app, browser, user):
    weak = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1).hash(PASSWORD)
    with app.app_context():
        db.session.get(User, user.id).password_hash = weak
        db.session.commit()
    assert browser.login(password="wrong but long enough").status_code == 401
    with app.app_context():
        assert db.session.get(User, user.id).password_hash == weak


def test_garbage_hash_never_verifies(app):
    with app.app_context():
        assert verify_password("not-a-hash", PASSWORD) is False
        assert verify_password(None, PASSWORD) is False
        assert verify_password("", "") is False


def test_account_without_password_cannot_sign_in_with_any_password(app, browser, user):
    with app.app_context():
        db.session.get(User, user.id).password_hash = None
        db.session.commit()
    for attempt in ("", "x", PASSWORD, "dummy password never matches"):
        r = browser.login(password=attempt)
        assert r.status_code in (400, 401)


GOOD = "Tr0ub4dor&3 wombat lantern"


def test_policy(app):
    with app.app_context():
        assert policy_errors(GOOD[:11]) == ["Use at least 12 characters."]
        assert policy_errors(GOOD) == []
        assert policy_errors((GOOD * 40)[:1024]) == []
        assert policy_errors((GOOD * 40)[:1025]) == ["Use at most 1024 characters."]
        assert policy_errors("Alice.Smith.1", "alice.smith.1") == [
            "The password cannot be your username."
        ]
        assert policy_errors("ALICE@EXAMPLE.ORG", "al", "alice@example.org") == [
            "The password cannot be your e-mail address."
        ]
        app.config["PASSWORD_MIN_LENGTH"] = 16
        assert policy_errors(GOOD[:15]) == ["Use at least 16 characters."]


COMMON = "This password is among the most common ones"


@pytest.mark.parametrize(
    "password",
    [
        "password1234",
        "PASSWORD1234",
        "Password1234!",
        "!!Password!!1234",
        "\uff30\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11\uff12\uff13\uff14",
        "qwertyuiop123",
        "Sunshine2024!",
        "iloveyou12345",
        "1qaz2wsx3edc4rfv",
    ],
)
def test_common_passwords_are_refused_ignoring_case_and_digits_or_symbols_added(app, password):
    with app.app_context():
        errors = policy_errors(password, "bob", "bob@example.org")
    assert errors and COMMON in errors[0], errors


def test_common_words_and_names_are_refused(app):
    with app.app_context():
        for password in ("Television2024", "jacqueline!!!!", "constitution"):
            errors = policy_errors(password)
            assert any("common word or name" in e for e in errors), (password, errors)


@pytest.mark.parametrize(
    "password",
    ["aaaaaaaaaaaa", "abababababab", "123123123123", "abcdefghijklmnop", "987654321098"],
)
def test_repetitions_and_runs_are_refused(app, password):
    with app.app_context():
        assert any("too regular" in e for e in policy_errors(password)), password


@pytest.mark.parametrize(
    "password,message",
    [
        ("alice2024!!!", "built on your username"),
        ("!!ALICE!!2024", "built on your username"),
        ("2024-\uff21lice-2024", "built on your username"),
        ("wonder.land%%%%", "built on your e-mail address"),
        ("wonder.land@mail.test.1", "built on your e-mail address"),
    ],
)
def test_passwords_built_on_the_username_or_email_are_refused(app, password, message):
    with app.app_context():
        errors = policy_errors(password, "alice", "Wonder.Land@mail.test")
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    "password",
    [
        PASSWORD,
        GOOD,
        "alice in wonderland, by the rabbit hole",  # the username among much more
        "7fQ2-kx9P-w3Lm",
        "0987654321ab",
        "al-al-al-al-9q",  # a two-letter username is not looked for
    ],
)
def test_uncommon_passwords_pass(app, password):
    with app.app_context():
        assert policy_errors(password, "alice", "alice@example.org") == []
        assert policy_errors(password, "al", "al@example.org") == []


def test_minimum_length_is_configurable_on_the_page(database_url, tmp_path):
    app = make_app(database_url, tmp_path, PASSWORD_MIN_LENGTH=20)
    from conftest import Browser, https_client

    with app.app_context():
        db.create_all()
    b = Browser(https_client(app))
    r = b.post(
        "/register",
        {"username": "zed", "email": "zed@example.org", "password": "x" * 19, "confirm": "x" * 19},
    )
    assert r.status_code == 400 and "Use at least 20 characters." in r.get_data(as_text=True)
    with app.app_context():
        assert accounts.find("zed") is None
        db.session.remove()  # hand the connection back before closing the pool
        db.engine.dispose()
