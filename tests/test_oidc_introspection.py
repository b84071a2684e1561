"""Introspection (RFC 7662) reports the state of the token presented, and every request's
answer is about its own token, under a threaded server with the token, introspection and
revocation endpoints busy at once."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from oidc_rp import App, Person, register, sign_in_and_allow
from sqlalchemy import update

from identity.extensions import db
from identity.models import Token


def introspect(app: App, token: str, hint: str | None = None) -> dict:
    data = {"token": token, **({"token_type_hint": hint} if hint else {})}
    response = app.post("/introspect", data)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_refresh_token_is_active_after_its_access_token_was_revoked(idp):
    app = App(idp, register(idp))
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    assert app.post("/revoke", {"token": tokens["access_token"]}).status_code == 200
    assert introspect(app, tokens["access_token"]) == {"active": False}
    info = introspect(app, tokens["refresh_token"])
    assert info["active"] is True and info["token_type"] == "refresh_token"
    # ...because /token still takes it.
    refreshed = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    # Spent by that rotation: now inactive, and its successor active.
    assert introspect(app, tokens["refresh_token"]) == {"active": False}
    assert introspect(app, refreshed.json()["refresh_token"])["active"] is True


def test_a_refresh_token_is_active_after_its_access_token_expired(idp):
    app = App(idp, register(idp))
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    with idp.app.app_context():
        db.session.execute(update(Token).values(issued_at=Token.issued_at - 3600))
        db.session.commit()
    assert introspect(app, tokens["access_token"]) == {"active": False}
    info = introspect(app, tokens["refresh_token"], "refresh_token")
    assert info["active"] is True and info["exp"] > info["iat"] + 3600


def test_an_expired_refresh_token_is_inactive_while_its_access_token_lives(idp):
    app = App(idp, register(idp))
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    with idp.app.app_context():
        db.session.execute(update(Token).values(refresh_token_expires_at=1))
        db.session.commit()
    assert introspect(app, tokens["access_token"])["active"] is True
    assert introspect(app, tokens["refresh_token"]) == {"active": False}


def test_concurrent_token_introspection_and_revocation_requests_each_get_their_own_answer(idp):
    """900 requests on 30 threads: introspections of an access token and of a refresh token
    (of one grant, so that a mixed-up answer shows), client-credentials token requests, and
    revocations of those tokens followed by their introspection."""
    user_app = App(idp, register(idp))
    tokens = user_app.redeem(sign_in_and_allow(Person(idp), user_app))
    machine = App(idp, register(idp, "batch", redirect_uris=[], grant_types=["client_credentials"]))
    with idp.app.app_context():
        jti = db.session.scalar(db.select(Token.access_token))

    def access():
        info = introspect(user_app, tokens["access_token"])
        assert info["active"] is True and info["token_type"] == "Bearer", info
        assert info["jti"] == jti, info
        return "access"

    def refresh():
        info = introspect(user_app, tokens["refresh_token"])
        assert info == {**info, "active": True, "token_type": "refresh_token"}, info
        assert "jti" not in info, info
        return "refresh"

    def issue_and_revoke():
        issued = machine.post("/token", {"grant_type": "client_credentials"})
        assert issued.status_code == 200, issued.text
        token = issued.json()["access_token"]
        assert introspect(machine, token)["token_type"] == "Bearer"
        assert machine.post("/revoke", {"token": token}).status_code == 200
        assert introspect(machine, token) == {"active": False}
        return "revoke"

    jobs = [access] * 400 + [refresh] * 400 + [issue_and_revoke] * 100
    random.Random(15).shuffle(jobs)
    with ThreadPoolExecutor(max_workers=30) as pool:
        done = list(pool.map(lambda job: job(), jobs))
    assert done.count("access") == 400 and done.count("refresh") == 400
    assert done.count("revoke") == 100
