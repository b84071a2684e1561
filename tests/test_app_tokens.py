"""An app's own tokens (the client credentials grant) are not stored when issued: logged and
counted, and checked by their signature, their `jti` (which says what they are) and their
app's existence. A row is written only when one is revoked (RFC 7009), so that
introspection and userinfo refuse it from then on."""

from __future__ import annotations

import json
import logging

import pytest
import requests
from oidc_rp import App, Person, register, sign_in_and_allow
from sqlalchemy import delete, func, select

from identity.extensions import db
from identity.models import Event, Token
from identity.oidc import validation


@pytest.fixture
def machine(idp) -> App:
    return App(idp, register(idp, "batch", redirect_uris=[], grant_types=["client_credentials"]))


def own_token(machine: App) -> str:
    issued = machine.post("/token", {"grant_type": "client_credentials"})
    assert issued.status_code == 200, issued.text
    return issued.json()["access_token"]


def introspect(app: App, token: str) -> dict:
    response = app.post("/introspect", {"token": token})
    assert response.status_code == 200, response.text
    return response.json()


def userinfo_error(idp, token: str) -> str:
    response = requests.get(
        f"{idp.url}/userinfo",
        headers={"Authorization": f"Bearer {token}"},
        verify=idp.ca,
        timeout=10,
    )
    return response.json()["error"]


def rows(idp) -> list[Token]:
    with idp.app.app_context():
        return list(db.session.scalars(select(Token)))


def test_an_apps_own_token_is_logged_not_stored(idp, machine, caplog):
    caplog.set_level(logging.INFO, logger="identity.audit")
    token = own_token(machine)
    claims = machine.verify(token).claims
    assert claims["jti"].startswith("app-")
    assert claims["sub"] == claims["client_id"] == machine.registered.client_id
    with idp.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Token)) == 0
        assert db.session.scalar(select(func.count()).where(Event.type == "token.issued")) == 0
    (logged,) = [json.loads(r.getMessage()) for r in caplog.records if "token.issued" in r.message]
    assert logged == {
        "event": "token.issued",
        "user_id": None,
        "ip": "127.0.0.1",
        "client_id": machine.registered.client_id,
        "grant_type": "client_credentials",
        "scope": "",
        "refresh": False,
    }
    # Checked without a row: active, as the app's own.
    info = introspect(machine, token)
    assert info == {
        "active": True,
        "client_id": machine.registered.client_id,
        "token_type": "Bearer",
        "scope": "",
        "iss": idp.url,
        "exp": claims["exp"],
        "iat": claims["iat"],
        "sub": machine.registered.client_id,
        "jti": claims["jti"],
    }
    # Accepted at userinfo, which wants a person's token with openid.
    assert userinfo_error(idp, token) == "insufficient_scope"


def test_a_revoked_app_token_is_refused_from_then_on(idp, machine):
    token, other = own_token(machine), own_token(machine)
    assert machine.post("/revoke", {"token": token}).status_code == 200
    assert introspect(machine, token) == {"active": False}
    assert userinfo_error(idp, token) == "invalid_token"
    (row,) = rows(idp)
    assert row.access_token_revoked_at and row.client_id == machine.registered.client_id
    # Revoking it again changes nothing; the app's other token lives on.
    assert machine.post("/revoke", {"token": token}).status_code == 200
    assert len(rows(idp)) == 1
    assert introspect(machine, other)["active"] is True


def test_another_app_cannot_revoke_an_apps_own_token(idp, machine):
    token = own_token(machine)
    intruder = App(
        idp, register(idp, "intruder", redirect_uris=[], grant_types=["client_credentials"])
    )
    refused = intruder.post("/revoke", {"token": token})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert rows(idp) == []
    assert introspect(machine, token)["active"] is True
    # Nor learn about it.
    assert introspect(intruder, token) == {"active": False}


def test_a_revocation_that_loses_the_race_to_store_the_row_is_answered(idp, machine, monkeypatch):
    """Two revocations of one app token at once: both read no row, both write one; the
    second write breaks the unique `jti`. It is answered 200 (the token is revoked) rather
    than with an error."""
    token = own_token(machine)
    assert machine.post("/revoke", {"token": token}).status_code == 200
    # The second one read before the first one's row was committed.
    claims = validation.access_token_claims
    monkeypatch.setattr(
        validation,
        "access_token_row",
        lambda string: Token(**validation._app_token_columns(claims(string))),
    )
    again = machine.post("/revoke", {"token": token})
    assert again.status_code == 200, again.text
    assert len(rows(idp)) == 1


def test_a_persons_token_whose_row_is_gone_is_not_taken_for_an_apps_own(idp):
    app = App(idp, register(idp))
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    assert not app.verify(tokens["access_token"]).claims["jti"].startswith("app-")
    with idp.app.app_context():
        db.session.execute(delete(Token))
        db.session.commit()
    assert introspect(app, tokens["access_token"]) == {"active": False}
    assert userinfo_error(idp, tokens["access_token"]) == "invalid_token"
