"""The admin page for token signing keys (/admin/keys): what is published, and rotating
them after the admin's password is asked again."""

from __future__ import annotations

import pytest
from audit_events import event_data
from sqlalchemy import select
from test_admin_console import make_admin

from conftest import PASSWORD
from identity.auth import accounts
from identity.extensions import db
from identity.models import SigningKey
from identity.oidc import keys


@pytest.fixture
def admin(app, browser):
    make_admin(app)
    assert browser.login("root").status_code == 302
    return browser


def stored_keys(app) -> list[tuple]:
    with app.app_context():
        return [
            (k.kid, k.alg, k.state, k.private_key, k.activated_at, k.retired_at, k.expires_at)
            for k in db.session.scalars(select(SigningKey).order_by(SigningKey.id))
        ]


def test_signed_out_visitors_are_sent_to_sign_in(app, browser):
    assert browser.get("/admin/keys").headers["Location"] == "/login?next=/admin/keys"
    response = browser.post("/admin/keys/rotate", {"admin_password": PASSWORD}, token_from="/login")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert stored_keys(app) == []


def test_people_who_are_not_admins_get_403(app, browser, user):
    with app.app_context():
        keys.ensure_keys()
    before = stored_keys(app)
    browser.login()
    assert browser.get("/admin/keys").status_code == 403
    response = browser.post(
        "/admin/keys/rotate", {"admin_password": user.password}, token_from="/account"
    )
    assert response.status_code == 403
    assert stored_keys(app) == before


def test_the_page_lists_the_published_keys_and_nothing_private(app, admin):
    page = admin.get("/admin/keys").get_data(as_text=True)
    assert 'href="/admin/keys" aria-current="page"' in page
    rows = stored_keys(app)
    assert len(rows) == 6  # made on first use: current and next for RS256, ES256, EdDSA
    for kid, _alg, _state, private, *_ in rows:
        assert kid in page and private not in page
    assert page.count("<strong>current</strong>") == 3
    assert page.count("<strong>next</strong>") == 3
    assert "6 published keys" in page
    assert 'autocomplete="current-password"' in page
    assert '"d"' not in page and "PRIVATE KEY" not in page


def test_rotation_asks_for_the_password_and_says_what_changed(app, admin):
    admin.get("/admin/keys")
    before = {kid: state for kid, _, state, *_ in stored_keys(app)}
    response = admin.post("/admin/keys/rotate", {"admin_password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/keys"
    after = {kid: state for kid, _, state, *_ in stored_keys(app)}
    promoted = [kid for kid, state in before.items() if state == "next"]
    retired = [kid for kid, state in before.items() if state == "current"]
    assert all(after[kid] == "current" for kid in promoted)
    assert all(after[kid] == "retired" for kid in retired)
    assert sum(state == "next" for state in after.values()) == 3 and len(after) == 9

    page = admin.get("/admin/keys").get_data(as_text=True)
    assert "Signing keys rotated: new tokens are signed with RS256 " in page
    assert "The 3 keys they replace stay published for 24 hours" in page
    for kid in promoted:
        assert kid[:10] + "…" in page
    assert page.count("<strong>retired</strong>") == 3
    assert "9 published keys" in page
    # Retired keys stay in the JWKS, so tokens they signed still verify.
    published = {k["kid"] for k in admin.get("/jwks.json").json["keys"]}
    assert set(retired) <= published
    (rotated,) = event_data(app, "keys.rotated")
    assert rotated["by"] == "root"
    assert {c["kid"] for c in rotated["changes"]} >= set(promoted) | set(retired)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"admin_password": "not my password"}, "That is not your password."),
        ({"admin_password": ""}, "Enter your password to confirm."),
        ({}, "Enter your password to confirm."),
        ({"admin_password": "x" * 2000}, "Field cannot be longer than 1024 characters."),
    ],
)
def test_rotation_with_a_wrong_password_changes_nothing(app, admin, data, message):
    admin.get("/admin/keys")
    before = stored_keys(app)
    response = admin.post("/admin/keys/rotate", data, token_from="/admin/keys")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in page and 'id="error-summary"' in page and "<title>Error: " in page
    assert 'aria-invalid="true"' in page
    assert stored_keys(app) == before
    assert event_data(app, "keys.rotated") == []


def test_another_accounts_password_does_not_rotate(app, admin):
    with app.app_context():
        accounts.create_local("other", "other@example.org", "another long password here")
    admin.get("/admin/keys")
    before = stored_keys(app)
    response = admin.post(
        "/admin/keys/rotate",
        {"admin_password": "another long password here"},
        token_from="/admin/keys",
    )
    assert response.status_code == 400
    assert stored_keys(app) == before
    assert len(event_data(app, "admin.reauth_failure")) == 1


def test_rotation_without_csrf_token_changes_nothing(app, admin):
    admin.get("/admin/keys")
    before = stored_keys(app)
    response = admin.post("/admin/keys/rotate", {"admin_password": PASSWORD}, csrf=False)
    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)
    assert stored_keys(app) == before


def test_rotation_answers_post_only(admin):
    assert admin.get("/admin/keys/rotate").status_code == 405


def test_guessing_the_admin_password_locks_like_a_sign_in(app, admin):
    """An open admin session is no way around the sign-in lockout: wrong confirmations count,
    and once locked even the right password is refused."""
    limit = app.config["LOCKOUT_ACCOUNT_FAILURES"]
    for _ in range(limit):
        response = admin.post("/admin/keys/rotate", {"admin_password": "a wrong guess"})
        assert "That is not your password." in response.get_data(as_text=True)
    locked = admin.post("/admin/keys/rotate", {"admin_password": PASSWORD})
    assert locked.status_code == 400
    assert "Too many failed sign-in attempts" in locked.get_data(as_text=True)
    assert event_data(app, "keys.rotated") == []
