"""PostgreSQL round trips on the token path (identity.database): userinfo and introspection
read their token in one round trip, a code or a refresh token is spent in one, and a
signed-in request reads its session with its account in one; a pooled connection is pinged
only after sitting idle, and one the database dropped while idle is replaced before a request
uses it. Always on PostgreSQL, whatever database the rest of the suite uses."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from oidc_rp import App, Person, register, sign_in_and_allow
from psycopg import pq
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from conftest import _postgres_schema_url
from identity import database
from identity.extensions import db
from identity.models.oauth import token_digest

POSTGRES = os.environ.get(
    "IDP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """This module's provider on PostgreSQL, in a schema of its own."""
    url, schema = _postgres_schema_url(POSTGRES)
    yield url
    admin = create_engine(POSTGRES, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@contextmanager
def wire(app) -> Iterator[list[str]]:
    """The protocol messages (libpq's trace) of each connection the app checks out while the
    block runs, one text per checkout, the liveness check included."""
    with app.app_context():
        engine = db.engine
    traces: list[str] = []

    def checkout(dbapi_connection, record, _proxy):
        trace = tempfile.TemporaryFile()
        dbapi_connection.pgconn.trace(trace.fileno())
        dbapi_connection.pgconn.set_trace_flags(
            pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE
        )
        record.info["test.trace"] = trace

    def checkin(dbapi_connection, record):
        trace = record.info.pop("test.trace", None)
        if trace is not None:
            dbapi_connection.pgconn.untrace()  # flushes it
            trace.seek(0)
            traces.append(trace.read().decode())
            trace.close()

    event.listen(engine, "checkout", checkout, insert=True)  # before the liveness check
    event.listen(engine, "checkin", checkin)
    try:
        yield traces
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


def messages(traces: list[str]) -> list[tuple[str, str, str]]:
    """(direction, kind, the rest) of each message; a statement's own line breaks continue
    its line."""
    found = []
    for trace in traces:
        for line in trace.splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and fields[0] in ("F", "B") and fields[1].isdigit():
                found.append((fields[0], fields[2].strip(), "\t".join(fields[3:]).strip()))
            elif found:
                direction, kind, rest = found[-1]
                found[-1] = (direction, kind, f"{rest} {line.strip()}")
    return found


def round_trips(traces: list[str]) -> int:
    """Each exchange ends with the server's ReadyForQuery."""
    return sum(kind == "ReadyForQuery" for _, kind, _ in messages(traces))


def queries(traces: list[str]) -> list[str]:
    """What the client sent, in order: simple queries, and the parsed statements."""
    return [rest for d, kind, rest in messages(traces) if d == "F" and kind in ("Query", "Parse")]


def userinfo(idp, access_token: str) -> requests.Response:
    return requests.get(
        f"{idp.url}/userinfo",
        headers={"Authorization": f"Bearer {access_token}"},
        verify=idp.ca,
        timeout=10,
    )


def test_userinfo_and_introspection_read_their_token_in_one_round_trip(idp, monkeypatch):
    monkeypatch.setattr(database, "PING_AFTER", 3600.0)  # no liveness check: counted below
    app = App(idp, register(idp))
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    assert userinfo(idp, tokens["access_token"]).status_code == 200  # caches warm
    assert app.post("/introspect", {"token": tokens["access_token"]}).json()["active"] is True
    for call in (
        lambda: userinfo(idp, tokens["access_token"]),
        lambda: app.post("/introspect", {"token": tokens["access_token"]}),
        lambda: app.post("/introspect", {"token": tokens["refresh_token"]}),
    ):
        with wire(idp.app) as traces:
            response = call()
        assert response.status_code == 200, response.text
        assert response.json().get("active", True) is True
        sent = queries(traces)
        assert round_trips(traces) == 1, sent
        assert len(sent) == 1 and "FROM oauth_tokens" in sent[0], sent  # no BEGIN, no ROLLBACK


def test_a_connection_used_a_moment_ago_is_not_pinged_and_an_idle_one_is(idp, monkeypatch):
    machine = App(idp, register(idp, "batch", redirect_uris=[], grant_types=["client_credentials"]))
    token = machine.post("/token", {"grant_type": "client_credentials"}).json()["access_token"]

    def introspected() -> bool:  # reads the database (whether the token was revoked)
        return machine.post("/introspect", {"token": token}).json()["active"]

    assert introspected()
    monkeypatch.setattr(database, "PING_AFTER", 3600.0)
    with wire(idp.app) as recent:
        assert introspected()
    monkeypatch.setattr(database, "PING_AFTER", 0.0)
    with wire(idp.app) as idle:
        assert introspected()
    assert queries(idle)[0] == '";"', queries(idle)  # the ping (an empty statement), first
    assert '";"' not in queries(recent), queries(recent)
    assert round_trips(idle) == round_trips(recent) + 1


def test_a_connection_the_database_dropped_while_idle_is_replaced_before_use(idp, monkeypatch):
    """A restart or failover while the pool sits idle: the next request is answered, not
    refused with a 503."""
    monkeypatch.setattr(database, "PING_AFTER", 0.0)  # every pooled connection counts as idle
    app = App(idp, register(idp))
    tokens = app.redeem(sign_in_and_allow(Person(idp), app))
    backends: set[int] = set()
    with idp.app.app_context():
        engine = db.engine
    listener = lambda dbapi_connection, *_: backends.add(dbapi_connection.info.backend_pid)  # noqa: E731
    event.listen(engine, "checkout", listener)
    try:
        assert userinfo(idp, tokens["access_token"]).status_code == 200
    finally:
        event.remove(engine, "checkout", listener)
    assert backends
    admin = create_engine(POSTGRES, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            for pid in backends:
                assert conn.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                ).scalar()
    finally:
        admin.dispose()
    for _ in range(3):
        response = userinfo(idp, tokens["access_token"])
        assert response.status_code == 200, response.text
    introspected = app.post("/introspect", {"token": tokens["access_token"]})
    assert introspected.status_code == 200 and introspected.json()["active"] is True


def spends(traces: list[str], table: str) -> list[str]:
    """The checkouts that ran a spend (a conditional UPDATE ... RETURNING) of `table`."""
    return [
        t
        for t in traces
        if any(f'"UPDATE {table} ' in q and "RETURNING" in q for q in queries([t]))
    ]


def test_a_code_and_a_refresh_token_are_spent_in_one_round_trip_each(idp, monkeypatch):
    """Spending is one conditional UPDATE, a transaction of its own: sent in autocommit mode,
    not as BEGIN, the UPDATE, COMMIT (three round trips, each a wait of the worker)."""
    monkeypatch.setattr(database, "PING_AFTER", 3600.0)  # no liveness check: counted below
    app = App(idp, register(idp))
    page = sign_in_and_allow(Person(idp), app)
    with wire(idp.app) as traces:
        tokens = app.redeem(page)
    (spend,) = spends(traces, "oauth_codes")
    assert round_trips([spend]) == 1 and len(queries([spend])) == 1, queries([spend])
    with wire(idp.app) as traces:
        refreshed = app.post(
            "/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )
    assert refreshed.status_code == 200, refreshed.text
    (spend,) = spends(traces, "oauth_tokens")
    assert round_trips([spend]) == 1 and len(queries([spend])) == 1, queries([spend])
    # Spent: the same refresh token again is a copy's (the grant ends).
    again = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_signed_in_request_reads_its_session_and_account_in_one_round_trip(idp, monkeypatch):
    """Every request of a signed-in browser asks whether its session's record is still there
    (ended elsewhere?) and loads its account: one statement, not two."""
    monkeypatch.setattr(database, "PING_AFTER", 3600.0)  # no liveness check: counted below
    person = Person(idp)
    sign_in_and_allow(person, App(idp, register(idp)))
    assert person.open(f"{idp.url}/account").status_code == 200  # caches warm
    with wire(idp.app) as traces:
        page = person.open(f"{idp.url}/account")
    assert page.status_code == 200 and page.final.endswith("/account"), page.final
    sent = queries(traces)
    checks = [q for q in sent if "WHERE browser_sessions.sid = $" in q]
    assert len(checks) == 1 and "JOIN users" in checks[0], sent
    assert not [q for q in sent if "FROM users" in q], sent  # the account: not read again
    # Read outside a transaction: a page that writes nothing begins none (no BEGIN, no
    # ROLLBACK around its reads).
    assert "BEGIN" not in sent[0], sent


def test_a_token_request_of_a_person_is_three_round_trips(idp, monkeypatch):
    """Redeeming a code and refreshing: the spend, the account read, and the new tokens saved
    with their fence and audit event in one statement (identity.oidc.tokens.FENCED_SAVE), each
    in autocommit mode: no BEGIN, no COMMIT (seven round trips before). The fence locks the
    row it came from and changes nothing in it."""
    from sqlalchemy import select

    from identity.models import Token

    monkeypatch.setattr(database, "PING_AFTER", 3600.0)  # no liveness check: counted below
    app = App(idp, register(idp))
    person = Person(idp)
    app.redeem(sign_in_and_allow(person, app))  # caches warm (keys, the app); consent given
    # The authorization request of a signed-in person: the session with its account, whether
    # the nonce was used, the person's consent to this app, the code: four round trips, no
    # BEGIN or COMMIT (six before; a first-party app's reads no consent).
    with wire(idp.app) as traces:
        page = person.open(app.authorization_url())
    sent = queries(traces)
    assert round_trips(traces) == 4, sent
    assert "FROM browser_sessions LEFT OUTER JOIN users" in sent[0], sent
    assert "SELECT oauth_codes.id" in sent[1] and "FROM oauth_consents" in sent[2], sent
    assert "INSERT INTO oauth_codes" in sent[3], sent
    with wire(idp.app) as traces:
        tokens = app.redeem(page)
    sent = queries(traces)
    assert round_trips(traces) == 3, sent
    assert "UPDATE oauth_codes SET used_at=$1" in sent[0] and "FROM users" in sent[1], sent
    assert "WITH fence AS (UPDATE oauth_codes SET used_at=oauth_codes.used_at WHERE" in sent[2]

    def row(refresh_token: str) -> dict:
        digest = token_digest(refresh_token)
        with idp.app.app_context():
            found = db.session.execute(select(Token.__table__).where(Token.refresh_token == digest))
            return found.one()._asdict()

    before = row(tokens["refresh_token"])
    with wire(idp.app) as traces:
        refreshed = app.post(
            "/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )
    assert refreshed.status_code == 200, refreshed.text
    sent = queries(traces)
    assert round_trips(traces) == 3, sent
    assert "UPDATE oauth_tokens SET refresh_token_used_at=$1" in sent[0], sent
    assert "FROM users" in sent[1], sent
    fence = "WITH fence AS (UPDATE oauth_tokens SET refresh_token_used_at=oauth_tokens.refresh"
    assert fence in sent[2] and "INSERT INTO oauth_tokens" in sent[2], sent
    assert "INSERT INTO audit_events" in sent[2], sent
    after = row(tokens["refresh_token"])
    assert after.pop("refresh_token_used_at") and before.pop("refresh_token_used_at") is None
    assert after == before
    new = row(refreshed.json()["refresh_token"])
    assert new["grant_id"] == before["grant_id"] and new["id"] != before["id"]
    assert app.post("/introspect", {"token": refreshed.json()["access_token"]}).json()["active"]
