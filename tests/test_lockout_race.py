"""A burst of concurrent sign-in attempts verifies at most IDP_LOCKOUT_ACCOUNT_FAILURES wrong
passwords per username: each attempt reserves its place in the count before its password is
checked. Against real HTTPS servers (threaded), one node or two sharing Redis and the
database, with 50 attempts released at once."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from contextlib import ExitStack

import pytest
import requests
from redis_server import REDIS_URL

from conftest import PASSWORD, csrf_from, dispose, make_app
from identity import certs
from identity.auth import accounts
from identity.connectors import local
from identity.extensions import db
from servers import https_server

FAILURES = 5
BURST = 50
WRONG = "not the password at all"


@pytest.fixture
def verifications(monkeypatch) -> Counter:
    """Every password verification of the local connector, by outcome (True: it matched),
    counted in the servers' threads (they run in this process)."""
    seen: Counter = Counter()
    lock = threading.Lock()
    real = local.verify_password

    def counted(stored_hash, password):
        matched = real(stored_hash, password)
        with lock:
            seen[matched] += 1
        return matched

    monkeypatch.setattr(local, "verify_password", counted)
    return seen


def nodes(stack: ExitStack, count: int, database_url, tmp_path, prefix) -> list[str]:
    """`count` nodes over HTTPS sharing the database, Redis and the secret key; their URLs."""
    secret = secrets.token_hex(32)
    urls, apps = [], []

    def close_all() -> None:
        for i, app in enumerate(apps):
            dispose(app) if i == 0 else _close(app)  # the first one also empties the tables

    stack.callback(close_all)  # registered first, so it runs after every server stopped
    for n in range(count):

        def build(port, first=(n == 0)):
            app = make_app(
                database_url,
                tmp_path,
                ISSUER=f"https://localhost:{port}",
                SECRET_KEY=secret,
                REDIS_URL=REDIS_URL,
                REDIS_KEY_PREFIX=prefix,
                LOCKOUT_ACCOUNT_FAILURES=FAILURES,
                LOCKOUT_IP_FAILURES=10_000,
                PASSWORD_CHECK_RATE_LIMIT="10000/minute",
            )
            if first:
                with app.app_context():
                    db.create_all()
                    accounts.create_local("alice", "alice@example.org", PASSWORD)
            return app

        app, port = stack.enter_context(https_server(build, tmp_path / "certs"))
        apps.append(app)
        urls.append(f"https://localhost:{port}")
    return urls


def _close(app) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def burst(urls: list[str], ca: str, passwords: list[str]) -> list[int]:
    """One sign-in per password, spread over the nodes, all sent at the same moment."""
    ready = threading.Barrier(len(passwords))
    statuses: list[int] = [0] * len(passwords)

    def one(i: int) -> None:
        url = urls[i % len(urls)]
        with requests.Session() as http:
            http.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify
            http.verify = ca
            token = csrf_from(http.get(f"{url}/login", timeout=30).text)
            form = {"csrf_token": token, "username": "alice", "password": passwords[i]}
            ready.wait(timeout=60)
            response = http.post(
                f"{url}/login",
                data=form,
                headers={"Referer": f"{url}/login"},
                allow_redirects=False,
                timeout=60,
            )
            statuses[i] = response.status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(passwords))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return statuses


@pytest.mark.parametrize("node_count", [1, 2], ids=["one-node", "two-nodes"])
def test_a_burst_verifies_no_more_wrong_passwords_than_the_lockout_allows(
    node_count, database_url, tmp_path, redis_prefix, verifications
):
    # The right password is inside the burst, near its end.
    passwords = [WRONG] * BURST
    for i in range(BURST - 5, BURST):
        passwords[i] = PASSWORD
    with ExitStack() as stack:
        urls = nodes(stack, node_count, database_url, tmp_path, redis_prefix)
        ca = str(tmp_path / "certs" / certs.CA_CERT)
        statuses = burst(urls, ca, passwords)
        answers = Counter(statuses)
        assert set(answers) <= {302, 401, 429}, answers
        # Honest counts: the answers, and the verifications done in the servers.
        assert answers[401] <= FAILURES, answers
        assert verifications[False] <= FAILURES, verifications
        assert verifications[False] == answers[401]
        assert verifications[True] == answers[302]
        # A wrong password that was refused unchecked is answered like a locked account.
        assert answers[429] >= BURST - FAILURES - 5
        if answers[401] == FAILURES:
            # The budget is spent: the right password no longer signs in, on any node.
            again = burst(urls, ca, [PASSWORD] * 10)
            assert set(again) == {429}, again


@pytest.mark.parametrize("node_count", [1, 2], ids=["one-node", "two-nodes"])
def test_more_concurrent_right_passwords_than_the_lockout_allows_all_sign_in(
    node_count, database_url, tmp_path, redis_prefix, verifications
):
    """Beyond IDP_LOCKOUT_ACCOUNT_FAILURES at once, an attempt waits for a place rather than
    being refused: one person's tabs, devices and double clicks are not an attack."""
    with ExitStack() as stack:
        urls = nodes(stack, node_count, database_url, tmp_path, redis_prefix)
        statuses = burst(urls, str(tmp_path / "certs" / certs.CA_CERT), [PASSWORD] * 12)
    assert statuses == [302] * 12, statuses
    assert verifications[True] == 12
