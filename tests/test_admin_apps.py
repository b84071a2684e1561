"""The admin pages for apps (/admin/apps) and `flask --app idp client update`: the same
validation as `client create`, the secret shown once, the admin's password asked again
before rotating or deleting, an audit event for every change, and nothing stored when a
request is refused."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from audit_events import event_data
from sqlalchemy import func, select
from test_admin_console import make_admin

from conftest import PASSWORD, https_client
from identity.auth import accounts
from identity.extensions import db
from identity.models import AuthorizationCode, Client, Consent, Event, Token
from identity.oidc import clients

CALLBACK = "https://wiki.example.org/cb"
SECRET_RE = re.compile(r'<code class="secret">([^<]+)</code>')
ALL_GRANTS = ["authorization_code", "refresh_token", "client_credentials"]


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def admin(app, browser):
    """Signed in as the admin `root`."""
    make_admin(app)
    response = browser.login("root")
    assert response.status_code == 302
    return browser


def register(app, name="Wiki", uris=(CALLBACK,), **kw) -> tuple[str, str | None]:
    with app.app_context():
        client, secret = clients.create(name, list(uris), **kw)
        return client.client_id, secret


def snapshot(app) -> dict:
    """Everything a refused request must leave as it was (failed re-authentications are
    recorded, as they should be, and left out)."""
    with app.app_context():
        return {
            "clients": [
                (c.client_id, c.name, c.client_secret, c._client_metadata, c.skip_consent)
                for c in db.session.scalars(select(Client).order_by(Client.id))
            ],
            "tokens": [
                (t.id, t.access_token_revoked_at, t.refresh_token_revoked_at)
                for t in db.session.scalars(select(Token).order_by(Token.id))
            ],
            "consents": [
                (c.user_id, c.client_id, c.scope)
                for c in db.session.scalars(select(Consent).order_by(Consent.id))
            ],
            "codes": db.session.scalar(select(func.count()).select_from(AuthorizationCode)),
            "events": [
                (e.type, e.data)
                for e in db.session.scalars(select(Event).order_by(Event.id))
                if e.type != "admin.reauth_failure"
            ],
        }


def all_event_data(app) -> str:
    with app.app_context():
        return json.dumps([e.data for e in db.session.scalars(select(Event).order_by(Event.id))])


def basic(client_id: str, secret: str) -> dict:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def client_credentials(client, client_id: str, secret: str):
    return client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
    )


def new_app_form(**overrides) -> dict:
    form = {
        "name": "Wiki",
        "redirect_uris": f"{CALLBACK}\r\nhttp://127.0.0.1:5000/cb\r\n",
        "post_logout_redirect_uris": "https://wiki.example.org/",
        "backchannel_logout_uri": "https://wiki.example.org/logout",
        "grant_types": ALL_GRANTS,
        "scopes": ["openid", "profile", "email"],
        "id_token_alg": "RS256",
        "admin_password": PASSWORD,
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def edit_form(app, client_id: str, **overrides) -> dict:
    with app.app_context():
        meta = db.session.scalar(select(Client).where(Client.client_id == client_id)).as_dict()
    form = {
        "name": meta["name"],
        "redirect_uris": "\n".join(meta["redirect_uris"]),
        "post_logout_redirect_uris": "\n".join(meta["post_logout_redirect_uris"]),
        "backchannel_logout_uri": meta["backchannel_logout_uri"] or "",
        "scopes": meta["scope"].split(),
        "admin_password": PASSWORD,
    }
    if meta["skip_consent"]:
        form["skip_consent"] = "y"
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def authorize_url(client_id: str, redirect_uri: str, verifier: str = "v" * 64) -> str:
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid profile",
        "state": "s1",
        "nonce": "n1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return "/authorize?" + urlencode(query)


def refused(response, status=400) -> str:
    """A refused form: its status, the error summary focused on load, the title saying so."""
    assert response.status_code == status, response.status_code
    page = response.get_data(as_text=True)
    assert 'id="error-summary"' in page and "autofocus" in page
    assert "<title>Error: " in page
    return page


# -- who may use the pages -----------------------------------------------------------------


def app_paths(client_id: str) -> list[str]:
    return [
        "/admin/apps",
        "/admin/apps/new",
        f"/admin/apps/{client_id}",
        f"/admin/apps/{client_id}/rotate",
        f"/admin/apps/{client_id}/delete",
    ]


def post_paths(client_id: str) -> list[str]:
    return app_paths(client_id)[1:]


def test_signed_out_visitors_are_sent_to_sign_in(app, browser):
    client_id, _ = register(app)
    before = snapshot(app)
    for path in app_paths(client_id):
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"] == f"/login?next={path}", path
    for path in post_paths(client_id):
        # With a valid CSRF token (from the login page): still sent to sign in.
        posted = browser.post(
            path,
            {"name": "x", "redirect_uris": CALLBACK, "admin_password": PASSWORD},
            token_from="/login",
        )
        assert posted.status_code == 302 and posted.headers["Location"].startswith("/login")
    assert snapshot(app) == before


def test_people_who_are_not_admins_get_403(app, browser, user):
    client_id, _ = register(app)
    browser.login()
    before = snapshot(app)
    for path in app_paths(client_id):
        assert browser.get(path).status_code == 403, path
    for path in post_paths(client_id):
        # With a valid CSRF token from a page they may see: still refused, nothing changes.
        response = browser.post(
            path,
            {"name": "Mine", "redirect_uris": CALLBACK, "admin_password": user.password},
            token_from="/account",
        )
        assert response.status_code == 403, path
    assert snapshot(app) == before


def test_the_console_links_to_apps(app, admin):
    page = admin.get("/admin/").get_data(as_text=True)
    assert 'href="/admin/apps"' in page
    listing = admin.get("/admin/apps").get_data(as_text=True)
    assert 'href="/admin/apps" aria-current="page"' in listing
    assert "No app is registered yet." in listing
    assert 'href="/admin/apps/new"' in listing


# -- list and create -----------------------------------------------------------------------


def test_list_shows_each_app(app, admin):
    wiki, _ = register(app, "Wiki", [CALLBACK, "http://localhost:3000/cb"])
    spa, _ = register(app, "SPA", ["http://127.0.0.1:8080/cb"], public=True)
    page = admin.get("/admin/apps").get_data(as_text=True)
    for text in (
        "Wiki",
        wiki,
        "confidential",
        CALLBACK,
        "http://localhost:3000/cb",
        "authorization_code, refresh_token",
        "SPA",
        spa,
        "public",
    ):
        assert text in page
    assert f'href="/admin/apps/{wiki}"' in page


def test_created_app_shows_its_secret_once_and_it_works_at_the_token_endpoint(
    app, admin, client, caplog
):
    caplog.set_level(logging.DEBUG)
    assert 'id="name"' in admin.get("/admin/apps/new").get_data(as_text=True)
    response = admin.post("/admin/apps/new", new_app_form())
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "shown only this once" in page
    (secret,) = SECRET_RE.findall(page)
    assert len(secret) >= 40
    with app.app_context():
        registered = db.session.scalar(select(Client))
        client_id = registered.client_id
        meta = registered.as_dict()
        assert secret not in (registered.client_secret or "") + registered._client_metadata
    assert client_id in page
    assert meta["redirect_uris"] == [CALLBACK, "http://127.0.0.1:5000/cb"]
    assert meta["post_logout_redirect_uris"] == ["https://wiki.example.org/"]
    assert meta["backchannel_logout_uri"] == "https://wiki.example.org/logout"
    assert meta["grant_types"] == ALL_GRANTS and meta["scope"] == "openid profile email"
    assert meta["public"] is False and meta["skip_consent"] is False

    # The shown secret gets a token.
    token = client_credentials(client, client_id, secret)
    assert token.status_code == 200, token.data
    assert token.json["access_token"]

    # Never again: not on the app's page, the list, the audit log, the logs.
    for path in ("/admin/apps", f"/admin/apps/{client_id}", f"/admin/apps/{client_id}/rotate"):
        assert secret not in admin.get(path).get_data(as_text=True), path
    assert secret not in all_event_data(app)
    assert secret not in caplog.text
    assert event_data(app, "client.created") == [
        {"client_id": client_id, "name": "Wiki", "by": "root"}
    ]
    with admin.client.session_transaction() as session:
        assert secret not in json.dumps(dict(session), default=str)


def test_created_public_app_has_no_secret(app, admin):
    response = admin.post(
        "/admin/apps/new",
        new_app_form(
            name="SPA",
            public="y",
            grant_types=["authorization_code"],
            backchannel_logout_uri="",
            post_logout_redirect_uris="",
            skip_consent="y",
            id_token_alg="ES256",
        ),
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert not SECRET_RE.search(page) and "a public app authenticates with PKCE only" in page
    with app.app_context():
        registered = db.session.scalar(select(Client))
        assert registered.public and registered.client_secret is None
        assert registered.skip_consent is True
        assert registered.as_dict()["id_token_signed_response_alg"] == "ES256"
        assert registered.as_dict()["backchannel_logout_uri"] is None


BAD_NEW_APPS = [
    ({"name": "Existing"}, "An app named &#39;Existing&#39; exists already"),
    ({"name": ""}, "Enter a name."),
    ({"name": "n" * 101}, "Use at most 100 characters."),
    ({"name": "bad\x01name"}, "Contains characters that cannot be used"),
    ({"redirect_uris": "http://wiki.example.org/cb"}, "http:// is allowed on loopback only"),
    ({"redirect_uris": "https://*.example.org/cb"}, "wildcards are not allowed"),
    ({"redirect_uris": "https://wiki.example.org/cb#top"}, "must not contain a fragment"),
    ({"redirect_uris": "/relative/cb"}, "must be an absolute https:// URI"),
    ({"redirect_uris": "javascript:alert(1)"}, "must be an absolute https:// URI"),
    ({"redirect_uris": "https://a.example/" + "x" * 2100}, "too long"),
    ({"redirect_uris": (CALLBACK + "\n") * 1500}, "Use at most 20,000 characters."),
    ({"redirect_uris": CALLBACK + "\n\x07https://b.example/cb"}, "cannot be used"),
    ({"redirect_uris": ""}, "At least one is needed for authorization_code"),
    ({"post_logout_redirect_uris": "http://evil.example/"}, "http:// is allowed on loopback"),
    ({"backchannel_logout_uri": "ftp://a.example/"}, "must be an absolute https:// URI"),
    ({"backchannel_logout_uri": "https://a.example/" + "x" * 2000}, "Use at most 2,000"),
    (
        {"grant_types": ["authorization_code", "password"]},
        "Not supported: password. Use authorization_code, refresh_token",
    ),
    ({"grant_types": ["implicit"]}, "Not supported: implicit."),
    ({"grant_types": ["x" * 5000]}, "not one of the choices"),
    ({"grant_types": None}, "Choose at least one grant type."),
    ({"grant_types": ["refresh_token"]}, "refresh_token goes with authorization_code"),
    ({"public": "y"}, "client_credentials needs a confidential app (leave “Public app” unticked)"),
    ({"scopes": ["openid", "admin"]}, "Not supported: admin. Use openid, profile"),
    ({"scopes": None}, "Choose at least one scope."),
    ({"id_token_alg": "none"}, "is not one of the configured algorithms"),
    ({"id_token_alg": "HS256"}, "is not one of the configured algorithms"),
]


@pytest.mark.parametrize("overrides, message", BAD_NEW_APPS)
def test_bad_new_apps_are_refused_and_store_nothing(app, admin, overrides, message):
    register(app, "Existing")
    before = snapshot(app)
    page = refused(admin.post("/admin/apps/new", new_app_form(**overrides)))
    assert message in page, page
    assert 'aria-invalid="true"' in page
    assert snapshot(app) == before


def test_new_app_without_csrf_token_is_refused(app, admin):
    before = snapshot(app)
    response = admin.post("/admin/apps/new", new_app_form(), csrf=False)
    assert response.status_code == 400
    assert "This form has expired" in response.get_data(as_text=True)
    assert snapshot(app) == before


# -- detail and edit -----------------------------------------------------------------------


def test_detail_page_shows_the_app_and_never_a_secret(app, admin):
    client_id, secret = register(app, post_logout_redirect_uris=["https://wiki.example.org/"])
    page = admin.get(f"/admin/apps/{client_id}").get_data(as_text=True)
    assert client_id in page and CALLBACK in page and "https://wiki.example.org/" in page
    assert "confidential" in page and "Rotate the secret" in page and "Delete the app" in page
    assert secret not in page
    with app.app_context():
        assert db.session.scalar(select(Client)).client_secret not in page  # nor its digest


def test_edit_changes_what_was_changed_and_a_removed_redirect_uri_stops_at_once(app, admin):
    client = https_client(app)  # signed out: a valid request goes to the login page
    client_id, _ = register(app, uris=[CALLBACK, "https://wiki.example.org/old"])
    # Before: the old URI is accepted (to the login page for a signed-out person).
    old_uri = "https://wiki.example.org/old"
    assert client.get(authorize_url(client_id, old_uri)).status_code == 302

    response = admin.post(
        f"/admin/apps/{client_id}",
        edit_form(
            app,
            client_id,
            name="Team Wiki",
            redirect_uris=f"{CALLBACK}\nhttps://wiki.example.org/new",
            backchannel_logout_uri="https://wiki.example.org/bc",
            scopes=["openid", "profile", "email", "groups"],
            skip_consent="y",
        ),
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/apps/{client_id}"
    page = admin.get(f"/admin/apps/{client_id}").get_data(as_text=True)
    assert "Saved Team Wiki:" in page and "redirect URIs" in page

    with app.app_context():
        meta = db.session.scalar(select(Client)).as_dict()
    assert meta["name"] == "Team Wiki"
    assert meta["redirect_uris"] == [CALLBACK, "https://wiki.example.org/new"]
    assert meta["backchannel_logout_uri"] == "https://wiki.example.org/bc"
    assert meta["scope"] == "openid profile email groups" and meta["skip_consent"] is True

    gone = client.get(authorize_url(client_id, old_uri))
    assert gone.status_code == 400 and "Location" not in gone.headers
    assert client.get(authorize_url(client_id, "https://wiki.example.org/new")).status_code == 302

    (event,) = event_data(app, "client.updated")
    assert event["by"] == "root" and event["client_id"] == client_id
    assert event["changes"]["redirect_uris"] == {
        "old": [CALLBACK, old_uri],
        "new": [CALLBACK, "https://wiki.example.org/new"],
    }
    assert event["changes"]["name"] == {"old": "Wiki", "new": "Team Wiki"}
    assert set(event["changes"]) == {
        "name",
        "redirect_uris",
        "backchannel_logout_uri",
        "scope",
        "skip_consent",
    }


def test_saving_an_unchanged_app_records_nothing(app, admin):
    client_id, _ = register(app)
    before = snapshot(app)
    response = admin.post(f"/admin/apps/{client_id}", edit_form(app, client_id))
    assert response.status_code == 302
    assert "Nothing changed." in admin.get(f"/admin/apps/{client_id}").get_data(as_text=True)
    assert snapshot(app) == before


def test_edit_can_remove_the_optional_uris(app, admin):
    client_id, _ = register(
        app,
        post_logout_redirect_uris=["https://wiki.example.org/"],
        backchannel_logout_uri="https://wiki.example.org/bc",
    )
    response = admin.post(
        f"/admin/apps/{client_id}",
        edit_form(app, client_id, post_logout_redirect_uris="", backchannel_logout_uri=""),
    )
    assert response.status_code == 302
    with app.app_context():
        meta = db.session.scalar(select(Client)).as_dict()
    assert meta["post_logout_redirect_uris"] == [] and meta["backchannel_logout_uri"] is None


BAD_EDITS = [
    ({"name": "Other"}, "An app named &#39;Other&#39; exists already"),
    ({"name": "  "}, "Enter a name."),
    ({"name": "n" * 101}, "Use at most 100 characters."),
    ({"redirect_uris": "http://wiki.example.org/cb"}, "http:// is allowed on loopback only"),
    ({"redirect_uris": "https://*.example.org/cb"}, "wildcards are not allowed"),
    ({"redirect_uris": "https://wiki.example.org/cb#x"}, "must not contain a fragment"),
    ({"redirect_uris": "cb"}, "must be an absolute https:// URI"),
    ({"redirect_uris": ""}, "At least one is needed for authorization_code"),
    ({"redirect_uris": "x" * 20_001}, "Use at most 20,000 characters."),
    ({"post_logout_redirect_uris": "https://*.example/"}, "wildcards are not allowed"),
    ({"backchannel_logout_uri": "http://wiki.example.org/bc"}, "loopback only"),
    ({"scopes": ["openid", "root"]}, "Not supported: root."),
    ({"scopes": None}, "Choose at least one scope."),
]


@pytest.mark.parametrize("overrides, message", BAD_EDITS)
def test_bad_edits_are_refused_and_change_nothing(app, admin, overrides, message):
    client_id, _ = register(app)
    register(app, "Other", ["https://other.example/cb"])
    before = snapshot(app)
    page = refused(admin.post(f"/admin/apps/{client_id}", edit_form(app, client_id, **overrides)))
    assert message in page, page
    assert snapshot(app) == before
    # The page still shows what is stored, beside the refused values.
    assert "Wiki" in page


def test_edit_without_csrf_token_is_refused(app, admin):
    client_id, _ = register(app)
    before = snapshot(app)
    response = admin.post(
        f"/admin/apps/{client_id}", edit_form(app, client_id, name="Changed"), csrf=False
    )
    assert response.status_code == 400
    assert snapshot(app) == before


@pytest.mark.parametrize(
    "client_id",
    ["nope", "x" * 49, "%00", "%E2%80%AE", "Wiki"],  # a name is not an id here
)
def test_unknown_client_id_is_a_404_page(app, admin, client_id):
    register(app)
    before = snapshot(app)
    for suffix in ("", "/rotate", "/delete"):
        response = admin.get(f"/admin/apps/{client_id}{suffix}")
        assert response.status_code == 404
        assert "<h1>Not found</h1>" in response.get_data(as_text=True)
        posted = admin.post(
            f"/admin/apps/{client_id}{suffix}",
            {"name": "X", "redirect_uris": CALLBACK, "admin_password": PASSWORD},
            token_from="/admin/apps",
        )
        assert posted.status_code == 404
    assert snapshot(app) == before


# -- rotate --------------------------------------------------------------------------------


def test_rotate_asks_for_the_password_shows_the_new_secret_once_and_stops_the_old(
    app, admin, client, caplog
):
    caplog.set_level(logging.DEBUG)
    client_id, old = register(app, grant_types=ALL_GRANTS)
    assert client_credentials(client, client_id, old).status_code == 200
    form = admin.get(f"/admin/apps/{client_id}/rotate").get_data(as_text=True)
    assert 'autocomplete="current-password"' in form and "stops working at once" in form

    response = admin.post(f"/admin/apps/{client_id}/rotate", {"admin_password": PASSWORD})
    assert response.status_code == 200
    (new,) = SECRET_RE.findall(response.get_data(as_text=True))
    assert new != old
    old_answer = client_credentials(client, client_id, old)
    assert old_answer.status_code == 401 and old_answer.json["error"] == "invalid_client"
    assert client_credentials(client, client_id, new).status_code == 200
    assert event_data(app, "client.secret_rotated") == [{"client_id": client_id, "by": "root"}]
    assert new not in all_event_data(app) and new not in caplog.text
    assert new not in admin.get(f"/admin/apps/{client_id}").get_data(as_text=True)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"admin_password": "not my password"}, "That is not your password."),
        ({"admin_password": ""}, "Enter your password to confirm."),
        ({}, "Enter your password to confirm."),
        ({"admin_password": "x" * 1025}, "Field cannot be longer than 1024 characters."),
    ],
)
def test_rotate_with_a_wrong_password_changes_nothing(app, admin, client, data, message):
    client_id, secret = register(app, grant_types=ALL_GRANTS)
    before = snapshot(app)
    page = refused(admin.post(f"/admin/apps/{client_id}/rotate", data))
    assert message in page and not SECRET_RE.search(page)
    assert snapshot(app) == before
    assert client_credentials(client, client_id, secret).status_code == 200


def test_another_accounts_password_does_not_confirm(app, admin):
    with app.app_context():
        accounts.create_local("other", "other@example.org", "another long password here")
    client_id, _ = register(app)
    before = snapshot(app)
    page = refused(
        admin.post(
            f"/admin/apps/{client_id}/rotate", {"admin_password": "another long password here"}
        )
    )
    assert "That is not your password." in page
    assert snapshot(app) == before
    assert len(event_data(app, "admin.reauth_failure")) == 1


def test_rotate_without_csrf_token_changes_nothing(app, admin):
    client_id, _ = register(app)
    before = snapshot(app)
    response = admin.post(
        f"/admin/apps/{client_id}/rotate", {"admin_password": PASSWORD}, csrf=False
    )
    assert response.status_code == 400 and not SECRET_RE.search(response.get_data(as_text=True))
    assert snapshot(app) == before


def test_a_public_app_has_no_secret_to_rotate(app, admin):
    client_id, _ = register(app, "SPA", ["http://localhost/cb"], public=True)
    assert "Rotate the secret" not in admin.get(f"/admin/apps/{client_id}").get_data(as_text=True)
    before = snapshot(app)
    assert admin.get(f"/admin/apps/{client_id}/rotate").status_code == 404
    response = admin.post(
        f"/admin/apps/{client_id}/rotate", {"admin_password": PASSWORD}, token_from="/admin/apps"
    )
    assert response.status_code == 404
    assert snapshot(app) == before


# -- delete --------------------------------------------------------------------------------


def sign_in_with(admin, client, client_id: str, secret: str) -> dict:
    """The code flow as the signed-in admin (a first-party app: no consent screen)."""
    response = admin.get(authorize_url(client_id, CALLBACK))
    assert response.status_code == 302, response.data
    code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    token = client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": "v" * 64,
        },
        headers=basic(client_id, secret),
    )
    assert token.status_code == 200, token.data
    return token.json


def test_delete_revokes_the_tokens_and_removes_the_consents(app, admin, client, user):
    client_id, secret = register(app, grant_types=ALL_GRANTS, skip_consent=True)
    other_id, other_secret = register(
        app, "Other", ["https://other.example/cb"], grant_types=ALL_GRANTS
    )
    tokens = sign_in_with(admin, client, client_id, secret)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/userinfo", headers=bearer).status_code == 200
    machine = client_credentials(client, client_id, secret).json["access_token"]
    other_token = client_credentials(client, other_id, other_secret).json["access_token"]
    with app.app_context():
        db.session.add(Consent(user_id=user.id, client_id=client_id, scope="openid"))
        db.session.add(Consent(user_id=user.id, client_id=other_id, scope="openid"))
        db.session.commit()

    # The app's own token is accepted (without the openid scope userinfo needs).
    own = {"Authorization": f"Bearer {machine}"}
    assert client.get("/userinfo", headers=own).json["error"] == "insufficient_scope"

    detail = admin.get(f"/admin/apps/{client_id}").get_data(as_text=True)
    assert "(of people: its own client-credentials tokens are not stored)" in detail
    page = admin.get(f"/admin/apps/{client_id}/delete").get_data(as_text=True)
    # The person's token; the app's own tokens are not stored, and end with the app.
    assert "Its 1 live token is revoked at once</strong> (and those it got for itself" in page
    response = admin.post(f"/admin/apps/{client_id}/delete", {"admin_password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/apps"
    listing = admin.get("/admin/apps").get_data(as_text=True)
    assert "Deleted Wiki: 1 tokens revoked, 1 consents removed." in listing

    assert client.get("/userinfo", headers=bearer).status_code == 401
    assert client.get("/userinfo", headers=own).json["error"] == "invalid_token"
    refresh = client.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(client_id, secret),
    )
    assert refresh.status_code == 401  # the app itself is gone
    assert client_credentials(client, client_id, secret).status_code == 401
    with app.app_context():
        assert [c.client_id for c in db.session.scalars(select(Client))] == [other_id]
        assert [c.client_id for c in db.session.scalars(select(Consent))] == [other_id]
        assert all(
            t.access_token_revoked_at and t.refresh_token_revoked_at
            for t in db.session.scalars(select(Token).where(Token.client_id == client_id))
        )
    # The other app keeps its own token.
    other = client.get("/userinfo", headers={"Authorization": f"Bearer {other_token}"})
    assert other.json["error"] == "insufficient_scope"
    (event,) = event_data(app, "client.deleted")
    assert event == {
        "client_id": client_id,
        "name": "Wiki",
        "revoked_tokens": 1,
        "removed_consents": 1,
        "by": "root",
    }


@pytest.mark.parametrize("data", [{"admin_password": "wrong password"}, {"admin_password": ""}, {}])
def test_delete_with_a_wrong_password_changes_nothing(app, admin, user, data):
    client_id, _ = register(app)
    with app.app_context():
        db.session.add(Consent(user_id=user.id, client_id=client_id, scope="openid"))
        db.session.commit()
    before = snapshot(app)
    page = refused(admin.post(f"/admin/apps/{client_id}/delete", data))
    assert "your password" in page
    assert snapshot(app) == before


def test_delete_without_csrf_token_changes_nothing(app, admin):
    client_id, _ = register(app)
    before = snapshot(app)
    response = admin.post(
        f"/admin/apps/{client_id}/delete", {"admin_password": PASSWORD}, csrf=False
    )
    assert response.status_code == 400
    assert snapshot(app) == before


# -- the command line ----------------------------------------------------------------------


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["client", *args])


def test_cli_update_replaces_the_given_lists_and_keeps_the_rest(app):
    client_id, _ = register(
        app,
        uris=[CALLBACK, "https://wiki.example.org/two"],
        post_logout_redirect_uris=["https://wiki.example.org/"],
        backchannel_logout_uri="https://wiki.example.org/bc",
    )
    r = cli(
        app,
        "update",
        "Wiki",
        "--name",
        "Team Wiki",
        "--redirect-uri",
        "https://wiki.example.org/new",
        "--scope",
        "openid",
        "--scope",
        "groups",
        "--skip-consent",
        "--json",
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["client_id"] == client_id and out["name"] == "Team Wiki"
    assert out["redirect_uris"] == ["https://wiki.example.org/new"]
    assert out["post_logout_redirect_uris"] == ["https://wiki.example.org/"]  # not given: kept
    assert out["backchannel_logout_uri"] == "https://wiki.example.org/bc"
    assert out["scope"] == "openid groups" and out["skip_consent"] is True
    assert out["changed"] == ["name", "redirect_uris", "scope", "skip_consent"]
    assert "client_secret" not in out

    r = cli(
        app,
        "update",
        client_id,
        "--no-backchannel-logout-uri",
        "--post-logout-redirect-uri",
        "",
        "--no-skip-consent",
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith(
        "changed: backchannel_logout_uri, post_logout_redirect_uris, skip_consent"
    )
    with app.app_context():
        meta = db.session.scalar(select(Client)).as_dict()
    assert meta["backchannel_logout_uri"] is None and meta["post_logout_redirect_uris"] == []
    assert meta["skip_consent"] is False
    assert cli(app, "update", "Team Wiki").output.startswith("nothing changed")
    changes = [e["changes"] for e in event_data(app, "client.updated")]
    assert len(changes) == 2 and "by" not in event_data(app, "client.updated")[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "Other"], "--name: an app named 'Other' exists already"),
        (["--name", ""], "--name: 1 to 100 characters"),
        (["--name", "n" * 101], "--name: 1 to 100 characters"),
        (["--redirect-uri", "http://wiki.example.org/cb"], "http:// is allowed on loopback only"),
        (["--redirect-uri", "https://*.example.org/cb"], "wildcards are not allowed"),
        (["--redirect-uri", "https://a.example/cb#f"], "must not contain a fragment"),
        (["--redirect-uri", "/cb"], "must be an absolute https:// URI"),
        (["--redirect-uri", ""], "--redirect-uri: at least one is needed"),
        (["--redirect-uri", CALLBACK, "--redirect-uri", "ftp://x/"], "--redirect-uri"),
        (["--post-logout-redirect-uri", "http://evil.example/"], "--post-logout-redirect-uri"),
        (["--backchannel-logout-uri", "https://a.example/\x00"], "control characters"),
        (
            ["--backchannel-logout-uri", "https://a.example/", "--no-backchannel-logout-uri"],
            "use one of them",
        ),
        (["--scope", "admin"], "--scope: admin not supported"),
        (["--scope", ""], "--scope: at least one is needed"),
    ],
)
def test_cli_update_bad_input_is_one_line_and_changes_nothing(app, args, message):
    register(app)
    register(app, "Other", ["https://other.example/cb"])
    before = snapshot(app)
    r = cli(app, "update", "Wiki", *args)
    assert r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1
    assert snapshot(app) == before


def test_cli_update_unknown_app(app):
    r = cli(app, "update", "nope", "--name", "X")
    assert r.exit_code == 1 and "no such app: nope" in r.output


def test_cli_delete_revokes_tokens_and_removes_consents(app, admin, client, user):
    client_id, secret = register(app, grant_types=ALL_GRANTS, skip_consent=True)
    sign_in_with(admin, client, client_id, secret)  # a person's token, stored
    machine = client_credentials(client, client_id, secret).json["access_token"]
    own = {"Authorization": f"Bearer {machine}"}
    assert client.get("/userinfo", headers=own).json["error"] == "insufficient_scope"
    with app.app_context():
        db.session.add(Consent(user_id=user.id, client_id=client_id, scope="openid"))
        db.session.commit()
    r = cli(app, "delete", "Wiki")
    assert r.exit_code == 0, r.output
    assert "1 tokens revoked, 1 consents removed" in r.output
    with app.app_context():
        (token,) = db.session.scalars(select(Token))
        assert token.access_token_revoked_at and token.refresh_token_revoked_at
        assert db.session.scalar(select(func.count()).select_from(Consent)) == 0
        assert db.session.scalar(select(func.count()).select_from(Client)) == 0
    # The app's own token, never stored, ends with the app.
    assert client.get("/userinfo", headers=own).json["error"] == "invalid_token"
    (event,) = event_data(app, "client.deleted")
    assert event["revoked_tokens"] == 1 and event["removed_consents"] == 1


def test_the_app_page_sets_what_sign_in_an_app_requires(app, admin):
    """The page's twin of `client create/update --acr`: stored, shown, audited, and a value
    the page does not offer is refused on its field."""
    response = admin.post(
        "/admin/apps/new", new_app_form(require_acr="phr"), token_from="/admin/apps/new"
    )
    assert response.status_code == 200
    with app.app_context():
        client_id = db.session.scalar(select(Client)).client_id
        assert db.session.scalar(select(Client)).as_dict()["require_acr"] == "phr"
    path = f"/admin/apps/{client_id}"
    assert '<option selected value="phr">' in admin.get(path).get_data(as_text=True)
    response = admin.post(path, edit_form(app, client_id, require_acr="mfa"))
    assert response.status_code == 302
    assert "required sign-in changed" in admin.get(path).get_data(as_text=True)
    refused = admin.post(path, edit_form(app, client_id, require_acr="gold"))
    assert refused.status_code == 400 and "is not one of none, mfa, phr" in refused.get_data(
        as_text=True
    ).replace("&#39;", "'")
    with app.app_context():
        assert db.session.scalar(select(Client)).as_dict()["require_acr"] == "mfa"
