"""Every dangerous admin action asks for the admin's password in the very request, so that a
session restored from a remember-me cookie (or any session whose credential is old) changes
nothing without presenting a credential: app registration and edits (redirect and logout
URIs, consent skipping), secrets, keys, and every account action."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from sqlalchemy import select

from conftest import PASSWORD
from identity import mail
from identity.auth import accounts
from identity.extensions import db
from identity.models import Client, LinkedIdentity, PasswordReset, SigningKey, User
from identity.oidc import clients, keys

CALLBACK = "https://wiki.example.org/cb"
NEW = "a brand new long passphrase"


@pytest.fixture
def restored_admin(app, browser, user, monkeypatch):
    """root, an administrator, whose browser restarted: its session was restored from the
    remember-me cookie and has presented no credential since. alice exists too."""
    monkeypatch.setattr(mail, "send", lambda *a: _done())
    with app.app_context():
        root = accounts.create_local("root", "root@example.org", PASSWORD)
        root.is_admin = True
        db.session.commit()
        client, _ = clients.create("Wiki", [CALLBACK])
        client_id = client.client_id
        keys.ensure_keys()
    assert browser.login("root", remember="y").status_code == 302
    browser.client.delete_cookie("__Host-session")
    assert browser.get("/admin/").status_code == 200  # restored: the console opens
    return browser, client_id, user.id


def _done() -> Future:
    done: Future = Future()
    done.set_result(None)
    return done


# (path, form, status on success); {app} is the app's client_id, {alice} alice's id.
ACTIONS = {
    "register an app": (
        "/admin/apps/new",
        {
            "name": "Evil",
            "redirect_uris": "https://evil.example/cb",
            "grant_types": ["authorization_code"],
            "scopes": ["openid"],
            "id_token_alg": "RS256",
        },
        200,
    ),
    "change redirect URIs": (
        "/admin/apps/{app}",
        {"name": "Wiki", "redirect_uris": "https://evil.example/cb", "scopes": ["openid"]},
        302,
    ),
    "change logout URIs": (
        "/admin/apps/{app}",
        {
            "name": "Wiki",
            "redirect_uris": CALLBACK,
            "post_logout_redirect_uris": "https://evil.example/bye",
            "backchannel_logout_uri": "https://evil.example/bc",
            "scopes": ["openid", "profile", "email"],
        },
        302,
    ),
    "skip consent": (
        "/admin/apps/{app}",
        {
            "name": "Wiki",
            "redirect_uris": CALLBACK,
            "scopes": ["openid", "profile", "email"],
            "skip_consent": "y",
        },
        302,
    ),
    "rotate an app secret": ("/admin/apps/{app}/rotate", {}, 200),
    "delete an app": ("/admin/apps/{app}/delete", {}, 302),
    "rotate signing keys": ("/admin/keys/rotate", {}, 302),
    "create an account": (
        "/admin/users/new",
        {
            "username": "mallory",
            "email": "m@example.org",
            "setup": "password",
            "password": NEW,
            "confirm": NEW,
        },
        303,
    ),
    "disable an account": ("/admin/users/{alice}/disable", {}, 303),
    "enable an account": ("/admin/users/{alice}/enable", {}, 303),
    "set a password": ("/admin/users/{alice}/password", {"password": NEW, "confirm": NEW}, 303),
    "send a reset link": ("/admin/users/{alice}/reset-link", {}, 303),
    "end sessions": ("/admin/users/{alice}/sessions", {}, 303),
    "make an administrator": ("/admin/users/{alice}/admin", {"grant": "1"}, 303),
}


def snapshot(app) -> list:
    with app.app_context():
        return [
            [
                (c.client_id, c.client_secret, c._client_metadata, c.skip_consent)
                for c in db.session.scalars(select(Client).order_by(Client.id))
            ],
            [
                (u.username, u.is_admin, u.disabled, u.password_hash, u.session_epoch)
                for u in db.session.scalars(select(User).order_by(User.id))
            ],
            [
                (k.kid, k.state)
                for k in db.session.scalars(select(SigningKey).order_by(SigningKey.id))
            ],
            [r.id for r in db.session.scalars(select(PasswordReset))],
            [link.id for link in db.session.scalars(select(LinkedIdentity))],
        ]


@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_restored_session_must_present_the_password_for(app, restored_admin, action):
    browser, client_id, alice = restored_admin
    path, form, ok = ACTIONS[action]
    path = path.format(app=client_id, alice=alice)
    if action == "enable an account":
        with app.app_context():
            db.session.get(User, alice).disabled = True
            db.session.commit()
    page = path if not path.endswith("/rotate") or "keys" not in path else "/admin/keys"
    before = snapshot(app)
    for password in (None, "not my password"):
        data = dict(form) if password is None else {**form, "admin_password": password}
        r = browser.post(path, data, token_from=page)
        assert r.status_code == 400, (action, password, r.status_code)
        assert "Your password (to confirm)" in r.get_data(as_text=True)
        assert snapshot(app) == before, (action, password)
    r = browser.post(path, {**form, "admin_password": PASSWORD}, token_from=page)
    assert r.status_code == ok, (action, r.status_code)
    assert snapshot(app) != before
