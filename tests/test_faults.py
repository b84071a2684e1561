"""Faults: PostgreSQL connections killed under load (as in a restart or failover). Requests
in flight get a clear 503, never a stack trace; the pool reconnects; nothing is lost."""

from __future__ import annotations

import base64
import os
import threading
import uuid

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from conftest import make_app
from identity.auth import accounts
from identity.extensions import db
from identity.models import Token, User
from identity.oidc import clients

POSTGRES = os.environ.get(
    "IDP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def test_postgresql_connections_killed_under_load(tmp_path):
    schema = f"idp_fault_{uuid.uuid4().hex[:10]}"
    name = f"idp-{schema}"
    admin = create_engine(POSTGRES, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}&application_name={name}"
    app = make_app(url, tmp_path, TOKEN_RATE_LIMIT="100000/second")
    try:
        with app.app_context():
            db.create_all()
            accounts.create_local("alice", "alice@example.org", "correct horse battery staple")
            machine, secret = clients.create("batch", [], grant_types=["client_credentials"])
        # Revoking an app's own token: each request reads and writes the database (its
        # tokens are not stored when issued; /jwks.json, which this test used before, is
        # served from memory between rebuilds).
        basic = base64.b64encode(f"{machine.client_id}:{secret}".encode()).decode()
        auth = {"Authorization": f"Basic {basic}"}

        def grant(test_client):
            token = test_client.post(
                "/token",
                data={"grant_type": "client_credentials"},
                headers=auth,
                base_url="https://localhost",
            )
            assert token.status_code == 200, token.data
            return test_client.post(
                "/revoke",
                data={"token": token.json["access_token"]},
                headers=auth,
                base_url="https://localhost",
            )

        client = app.test_client()
        # Warm: the first token makes the signing keys (slow; a kill would cut it each time).
        assert grant(client).status_code == 200
        answers: list[tuple[int, bytes]] = []  # one append per answer: threads interleave
        stop = threading.Event()

        def load():
            local = app.test_client()
            while not stop.is_set():
                r = grant(local)
                answers.append((r.status_code, r.data))

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        killed = 0
        for _ in range(10):
            with admin.begin() as conn:
                killed += conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :name"
                    ),
                    {"name": name},
                ).scalar()
            threading.Event().wait(0.1)
        stop.set()
        for w in workers:
            w.join()
        assert killed > 0, "the load never held a connection"
        statuses = [status for status, _ in answers]
        bodies = [body for _, body in answers]
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        assert statuses.count(200) > 0
        assert not any(b"Traceback" in body for body in bodies)
        for status, body in zip(statuses, bodies, strict=True):
            if status == 503:
                assert b"temporarily_unavailable" in body
        # Afterwards: the pool has reconnected, and the data is all there.
        assert grant(client).status_code == 200
        with app.app_context():
            assert db.session.scalar(select(func.count()).select_from(User)) == 1
            # Every revocation answered was recorded (and the two before and after the load).
            recorded = db.session.scalar(
                select(func.count()).select_from(Token).where(Token.access_token_revoked_at > 0)
            )
            assert recorded >= statuses.count(200) + 2
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
