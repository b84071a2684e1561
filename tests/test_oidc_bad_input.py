"""Malformed requests to every provider endpoint: the standard OAuth error (JSON for apps, a
page for people), never a 500, and nothing issued or stored."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import func, select

from identity.models import AuthorizationCode, Token
from identity.oidc import clients

CALLBACK = "https://app.example/callback"


@pytest.fixture
def app_client(app, db):
    with app.app_context():
        client, secret = clients.create("notes", [CALLBACK, "https://app.example/two"])
        public, _ = clients.create("spa", [CALLBACK], public=True)
        return {"id": client.client_id, "secret": secret, "public": public.client_id}


def basic(client_id: str, secret: str) -> dict:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def stored(app, db) -> tuple[int, int]:
    with app.app_context():
        return (
            db.session.scalar(select(func.count()).select_from(Token)),
            db.session.scalar(select(func.count()).select_from(AuthorizationCode)),
        )


TOKEN_BODIES = [
    ({}, "unsupported_grant_type"),
    ({"grant_type": ""}, "unsupported_grant_type"),
    ({"grant_type": "authorization_code"}, "invalid_request"),
    ({"grant_type": "authorization_code", "code": "x" * 5000}, "invalid_grant"),
    ({"grant_type": "authorization_code", "code": "é\u0000"}, "invalid_grant"),
    ({"grant_type": "refresh_token"}, "invalid_request"),
    ({"grant_type": "refresh_token", "refresh_token": "nope"}, "invalid_grant"),
    ({"grant_type": "client_credentials"}, "unauthorized_client"),
    ({"grant_type": "implicit"}, "unsupported_grant_type"),
]


@pytest.mark.parametrize("body, error", TOKEN_BODIES)
def test_token_endpoint_bad_bodies(client, app, db, app_client, body, error):
    response = client.post(
        "/token", data=body, headers=basic(app_client["id"], app_client["secret"])
    )
    assert response.status_code == 400, response.data
    assert response.json["error"] == error
    assert response.headers["Cache-Control"] == "no-store"
    assert stored(app, db) == (0, 0)


def test_token_endpoint_other_shapes(client, app, db, app_client):
    auth = basic(app_client["id"], app_client["secret"])
    cases = [
        client.post("/token", json={"grant_type": "client_credentials"}, headers=auth),
        client.post(
            "/token",
            data=b"\xff\xfe=\xff",
            headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
        ),
        client.post(
            "/token",
            data="grant_type=client_credentials&grant_type=client_credentials",
            headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
        ),
        client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": "Basic !!!"},
        ),
        client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
        ),
        client.post(
            "/token",
            data={"grant_type": "client_credentials", "client_id": "x" * 500, "client_secret": "y"},
        ),
        client.get("/token"),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, (response.status_code, response.data)
        assert response.is_json, response.data
        assert "error" in response.json
        assert b"Traceback" not in response.data
    assert stored(app, db) == (0, 0)


def test_public_app_cannot_pretend_to_be_confidential(client, app_client):
    response = client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app_client["public"],
            "client_secret": "x",
        },
    )
    assert response.status_code in (400, 401) and response.json["error"] in (
        "invalid_client",
        "unauthorized_client",
    )


AUTHORIZE_QUERIES = [
    "",
    "client_id=",
    "response_type=code",
    "response_type=code&client_id=%00",
    "response_type=code&client_id=" + "x" * 3000,
    "response_type=code&client_id={id}&redirect_uri=javascript:alert(1)",
    "response_type=code&client_id={id}&redirect_uri=" + CALLBACK + "&redirect_uri=" + CALLBACK,
    "response_type=code&client_id={id}",  # two URIs registered: which one?
]


@pytest.mark.parametrize("query", AUTHORIZE_QUERIES)
def test_authorize_without_a_valid_app_and_redirect_uri_answers_with_a_page(
    client, app_client, query
):
    response = client.get("/authorize?" + query.format(id=app_client["id"]))
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert b"This sign-in request is not valid" in response.data


def test_client_credentials_with_an_unknown_scope(client, app, db, app_client):
    with app.app_context():
        batch, secret = clients.create("batch", [], grant_types=["client_credentials"])
        batch_id = batch.client_id
    response = client.post(
        "/token",
        data={"grant_type": "client_credentials", "scope": "root"},
        headers=basic(batch_id, secret),
    )
    assert response.status_code == 400 and response.json["error"] == "invalid_scope"
    assert stored(app, db) == (0, 0)


def test_authorize_duplicate_parameters_are_refused(client, app_client):
    query = (
        f"response_type=code&client_id={app_client['id']}&redirect_uri={CALLBACK}"
        "&scope=openid&state=a&state=b"
    )
    response = client.get("/authorize?" + query)
    assert response.status_code == 400 and b"Multiple" in response.data


@pytest.mark.parametrize("nonce", ["a\x00b", "n" * 300, "line\nbreak"])
def test_authorize_bad_nonce_goes_back_to_the_app(client, app_client, nonce):
    response = client.get(
        "/authorize",
        query_string={
            "response_type": "code",
            "client_id": app_client["id"],
            "redirect_uri": CALLBACK,
            "scope": "openid",
            "nonce": nonce,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].startswith(CALLBACK + "?error=invalid_request")


@pytest.mark.parametrize(
    "path, data",
    [
        ("/introspect", {}),
        ("/introspect", {"token": ""}),
        ("/introspect", {"token": "a.b.c", "token_type_hint": "weird"}),
        ("/revoke", {}),
        ("/revoke", {"token": "x", "token_type_hint": "id_token"}),
    ],
)
def test_introspect_and_revoke_bad_bodies(client, app, db, app_client, path, data):
    response = client.post(path, data=data, headers=basic(app_client["id"], app_client["secret"]))
    assert 400 <= response.status_code < 500 or response.json == {"active": False}
    assert response.is_json and b"Traceback" not in response.data


def test_introspect_needs_a_confidential_app(client, app_client):
    response = client.post("/introspect", data={"token": "x", "client_id": app_client["public"]})
    assert response.status_code == 401 and response.json["error"] == "invalid_client"


@pytest.mark.parametrize(
    "query",
    [
        "id_token_hint=garbage",
        "id_token_hint=a.b.c",
        "id_token_hint=" + "x" * 5000,
        "client_id=unknown",
        "post_logout_redirect_uri=https://evil.example/",
    ],
)
def test_end_session_bad_input(client, query):
    response = client.get("/end_session?" + query)
    assert response.status_code in (200, 400)
    assert "Location" not in response.headers
    assert b"Traceback" not in response.data


def test_userinfo_rejects_other_methods(client):
    assert client.put("/userinfo").status_code == 405


@pytest.mark.parametrize(
    "header", ["Basic ", "Basic", "basic  ", "Basic " + base64.b64encode(b"\xff\xfe:x").decode()]
)
@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_malformed_basic_credentials_are_invalid_client(client, path, header):
    response = client.post(
        path,
        data={"grant_type": "client_credentials", "token": "x"},
        headers={"Authorization": header},
    )
    assert response.status_code == 401 and response.json["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
