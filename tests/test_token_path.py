"""What a token request pays for, kept cheap without changing what it does: in-memory
counting starts no thread per request, the token-table sweep is not built at every token,
and the JWKS document is built once per few seconds."""

from __future__ import annotations

import threading
import time

import limits.storage.memory as limits_memory
from limits import parse
from limits.strategies import MovingWindowRateLimiter

from identity.counters import Memory


def test_in_memory_counting_starts_no_thread_per_hit(monkeypatch):
    storage = Memory()
    started = []

    class CountingTimer(threading.Timer):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(limits_memory.threading, "Timer", CountingTimer)
    limiter = MovingWindowRateLimiter(storage)
    limit = parse("100/minute")
    for _ in range(5):
        assert limiter.hit(limit, "client")
        time.sleep(0.02)  # limits' own storage has let its 10 ms timer fire: it starts another
    assert started == []
    assert limiter.get_window_stats(limit, "client").remaining == 95


def test_in_memory_counting_still_expires_and_trims():
    storage = Memory()
    limiter = MovingWindowRateLimiter(storage)
    limit = parse("2/second")
    assert limiter.hit(limit, "client") and limiter.hit(limit, "client")
    assert not limiter.hit(limit, "client")
    time.sleep(1.1)  # the window moves on
    storage._next_expiry = 0.0  # the next hit drops what has expired
    assert limiter.hit(limit, "client")
    assert [len(entries) for entries in storage.events.values()] == [1]


def test_the_token_sweep_is_built_only_when_it_is_due(idp, monkeypatch):
    from oidc_rp import App, register

    from identity.oidc import tokens

    built = []
    real = tokens.prunable_tokens
    monkeypatch.setattr(tokens, "prunable_tokens", lambda now: built.append(now) or real(now))
    machine = App(idp, register(idp, "batch", redirect_uris=[], grant_types=["client_credentials"]))
    for _ in range(3):
        response = machine.post("/token", {"grant_type": "client_credentials"})
        assert response.status_code == 200, response.text
        # An app's own token is stored when it is revoked, and that sweeps.
        revoked = machine.post("/revoke", {"token": response.json()["access_token"]})
        assert revoked.status_code == 200, revoked.text
    assert len(built) == 1  # the first row swept; the next sweep is a minute away


def _statements(app, call):
    """The SQL statements `call` makes, and its result."""
    from sqlalchemy import event

    from identity.extensions import db

    statements = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731 - the statement
    event.listen(engine, "before_cursor_execute", listener)
    try:
        result = call()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return statements, result


def test_the_jwks_document_is_served_without_a_query_and_rebuilt_at_a_rotation_here(app, client):
    from identity.oidc import keys

    first = client.get("/jwks.json")
    statements, again = _statements(app, lambda: client.get("/jwks.json"))
    assert again.data == first.data and again.headers["Cache-Control"] == "public, max-age=300"
    assert statements == []
    with app.app_context():
        keys.rotate()
    rotated = client.get("/jwks.json").json["keys"]
    assert len(rotated) == len(first.json["keys"]) + len(app.config["SIGNING_ALGORITHMS"])


def _kid(token: str) -> str:
    import base64
    import json

    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def test_a_jwks_document_built_before_a_rotation_elsewhere_still_holds_the_signing_key(
    idp, database_url, tmp_path
):
    """Why a cached document is safe: another process rotates (its next key becomes current
    and signs), and the document this process built before the rotation already publishes
    that key; once the document's seconds are up, the new next key is published too."""
    from oidc_rp import App, register

    from conftest import make_app
    from identity.oidc import keys

    machine = App(idp, register(idp, "batch", redirect_uris=[], grant_types=["client_credentials"]))
    before = machine.post("/token", {"grant_type": "client_credentials"}).json()["access_token"]
    published = requests_jwks(idp)
    assert _kid(before) in published
    other = make_app(database_url, tmp_path / "other", ISSUER=idp.url)  # another process
    try:
        with other.app_context():
            keys.rotate()
            new_next = {r.kid for r in keys.published() if r.state == "next"}
    finally:
        dispose_engine(other)
    with idp.app.app_context():
        keys._cache()["current"].clear()  # this process's CURRENT_TTL is up: it signs anew
    after = machine.post("/token", {"grant_type": "client_credentials"}).json()["access_token"]
    assert _kid(after) != _kid(before)  # the rotation reached this process's signing
    cached = requests_jwks(idp)
    assert cached == published  # the document built before the rotation, still served
    assert _kid(after) in cached  # and it verifies the tokens signed since
    machine.verify(after)
    assert not new_next & set(cached)
    with idp.app.app_context():
        deadline, body = keys._cache()["jwks"]
        keys._cache()["jwks"] = (deadline - keys.JWKS_TTL, body)  # its seconds are up
    assert new_next <= set(requests_jwks(idp))


def requests_jwks(idp) -> dict:
    """The kids of /jwks.json as served now, with their keys."""
    import requests

    keys = requests.get(f"{idp.url}/jwks.json", verify=idp.ca, timeout=10).json()["keys"]
    return {k["kid"]: k for k in keys}


def dispose_engine(app) -> None:
    from identity.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_introspection_and_userinfo_load_no_token_or_account_object(idp):
    """They read the token's row and its account's claims with one Core statement: the ORM
    objects (and their unit of work) are left to the endpoints that change a token."""
    import requests
    from oidc_rp import App, Person, register, sign_in_and_allow
    from sqlalchemy import event

    from identity.models import Token, User

    app = App(idp, register(idp))
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    loaded = []
    listener = lambda target, _context: loaded.append(type(target).__name__)  # noqa: E731
    for model in (Token, User):
        event.listen(model, "load", listener)
    try:
        access = app.post("/introspect", {"token": tokens["access_token"]}).json()
        refresh = app.post("/introspect", {"token": tokens["refresh_token"]}).json()
        info = requests.get(
            f"{idp.url}/userinfo",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            verify=idp.ca,
            timeout=10,
        )
    finally:
        for model in (Token, User):
            event.remove(model, "load", listener)
    assert loaded == []
    assert access["active"] is True and access["username"] == "alice"
    assert access["token_type"] == "Bearer" and access["jti"]
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    assert refresh["sub"] == access["sub"] == info.json()["sub"]
    assert info.status_code == 200 and info.json()["email"] == "alice@example.org"


def test_a_token_is_verified_once_per_key_set_however_often_it_is_presented(idp, monkeypatch):
    """Its signature is checked at its first presentation; then, until the key set is read
    again, the same text is known verified. Its row is still read every time (revocation
    stays immediate), and a token that fails verification is never remembered."""
    from oidc_rp import App, Person, register, sign_in_and_allow

    from identity.oidc import keys, validation

    app = App(idp, register(idp))
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    verified = []
    real = validation.jwt.decode
    monkeypatch.setattr(
        validation.jwt, "decode", lambda *a, **k: verified.append(a[0]) or real(*a, **k)
    )
    access = tokens["access_token"]
    for _ in range(3):
        assert app.post("/introspect", {"token": access}).json()["active"] is True
    assert verified == [access]
    forged = access[:-4] + ("AAAA" if access[-4:] != "AAAA" else "BBBB")
    for _ in range(2):
        assert app.post("/introspect", {"token": forged}).json() == {"active": False}
    assert verified == [access, forged, forged]
    assert app.post("/revoke", {"token": access}).status_code == 200
    assert app.post("/introspect", {"token": access}).json() == {"active": False}
    with idp.app.app_context():
        keys.rotate()  # a new key set: verified anew
    assert app.post("/introspect", {"token": access}).json() == {"active": False}
    assert verified.count(access) == 2
