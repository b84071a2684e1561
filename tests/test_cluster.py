"""A cluster: two service processes (gunicorn, over HTTPS) on different ports, sharing one
PostgreSQL database and one Redis and nothing else. What one node does, the other sees."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import requests
from oidc_rp import App, Person
from ports import listen_port
from redis_server import REDIS_URL
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from conftest import PASSWORD
from identity import certs
from identity.oidc import keys

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POSTGRES = os.environ.get(
    "IDP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CALLBACK = "https://app.example/callback"


@pytest.fixture
def cluster(tmp_path) -> Iterator[SimpleNamespace]:
    """Nodes A and B: one PostgreSQL schema, one Redis key prefix, one secret, one issuer."""
    schema = f"idp_cluster_{uuid.uuid4().hex[:10]}"
    engine = create_engine(POSTGRES, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    prefix = f"idp-test-{uuid.uuid4().hex[:8]}"
    certs_dir = tmp_path / "certs"
    certs.ensure(certs_dir, certs.hosts_for("localhost"))
    ports = [listen_port(), listen_port()]
    env = {
        **os.environ,
        "IDP_DATABASE_URL": f"{POSTGRES}?options=-csearch_path%3D{schema}",
        "IDP_REDIS_URL": REDIS_URL,
        "IDP_REDIS_KEY_PREFIX": prefix,
        "IDP_SECRET_KEY": secrets.token_hex(32),
        # Behind a load balancer every node has the balancer's address as its issuer.
        "IDP_ISSUER": f"https://localhost:{ports[0]}",
        "IDP_LOCKOUT_ACCOUNT_FAILURES": "4",
        "IDP_ARGON2_MEMORY_COST": "1024",
        "IDP_ARGON2_TIME_COST": "1",
        # alice is an administrator: the second-factor tests cover IDP_MFA_REQUIRED=admins.
        "IDP_MFA_REQUIRED": "none",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    flask = [str(BIN / "flask"), "--app", "idp"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run(
        [*flask, "user", "create", "--username", "alice", "--email", "alice@example.org"]
        + ["--password-stdin", "--admin"],
        cwd=ROOT,
        env=env,
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    nodes = []
    try:
        for port in ports:
            proc = subprocess.Popen(
                [str(BIN / "gunicorn"), "idp:app", "--bind", f"127.0.0.1:{port}"]
                + ["--workers", "1", "--certfile", str(certs_dir / certs.TLS_CERT)]
                + ["--keyfile", str(certs_dir / certs.TLS_KEY)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            nodes.append(proc)
        ca = str(certs_dir / certs.CA_CERT)
        for port in ports:
            _wait_ready(f"https://localhost:{port}", ca)
        yield SimpleNamespace(
            a=SimpleNamespace(url=f"https://localhost:{ports[0]}", ca=ca, app=None),
            b=SimpleNamespace(url=f"https://localhost:{ports[1]}", ca=ca, app=None),
            env=env,
        )
    finally:
        for proc in nodes:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in nodes:
            proc.wait(timeout=30)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
        store = redis.Redis.from_url(REDIS_URL)
        for key in store.scan_iter(f"{prefix}*"):
            store.delete(key)
        store.close()


def _wait_ready(url: str, ca: str) -> None:
    for _ in range(200):
        try:
            if requests.get(f"{url}/readyz", verify=ca, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


def register(cluster) -> SimpleNamespace:
    out = subprocess.run(
        [str(BIN / "flask"), "--app", "idp", "client", "create", "--name", "notes"]
        + ["--redirect-uri", CALLBACK, "--skip-consent", "--json"],
        cwd=ROOT,
        env=cluster.env,
        check=True,
        capture_output=True,
        text=True,
    )
    import json

    data = json.loads(out.stdout)
    return SimpleNamespace(
        client_id=data["client_id"], secret=data["client_secret"], public=False, name="notes"
    )


def test_sign_in_at_a_authorize_at_b_redeem_at_a(cluster):
    registered = register(cluster)
    person_at_a = Person(cluster.a)
    page = person_at_a.open(f"{cluster.a.url}/login")
    person_at_a.sign_in(page)
    # The same browser (cookies are per host, not per port) at node B.
    person_at_b = Person(cluster.b)
    person_at_b.http = person_at_a.http
    app_via_b = App(cluster.b, registered)
    response = person_at_b.open(app_via_b.authorization_url())
    assert app_via_b.callback_params(response)["code"]
    app_via_a = App(cluster.a, registered)
    app_via_a.verifier, app_via_a.nonce = app_via_b.verifier, app_via_b.nonce
    token = app_via_a.redeem(response)
    claims = app_via_a.verify(token["id_token"]).claims
    assert claims["iss"] == cluster.a.url and claims["nonce"] == app_via_b.nonce
    # The refresh token from A works at B, once.
    refreshed = App(cluster.b, registered).post(
        "/token", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
    )
    assert refreshed.status_code == 200


def test_failed_sign_ins_at_a_and_b_count_toward_one_lockout(cluster):
    for node in (cluster.a, cluster.b, cluster.a, cluster.b):
        person = Person(node)
        refused = person.submit(
            person.open(f"{node.url}/login"), {"username": "alice", "password": "wrong guess"}
        )
        assert refused.status_code == 401
    for node in (cluster.a, cluster.b):
        person = Person(node)
        locked = person.sign_in(person.open(f"{node.url}/login"))
        assert locked.status_code == 429 and locked.headers["Retry-After"]


def test_a_key_rotated_at_a_is_in_b_s_jwks(cluster):
    person = Person(cluster.a)
    person.sign_in(person.open(f"{cluster.a.url}/login"))
    keys_page = person.open(f"{cluster.a.url}/admin/keys")
    before = {
        k["kid"]
        for k in requests.get(f"{cluster.b.url}/jwks.json", verify=cluster.b.ca).json()["keys"]
    }
    person.submit(keys_page, {"admin_password": PASSWORD}, action="/admin/keys/rotate")

    def published_at_b() -> set[str]:
        answer = requests.get(f"{cluster.b.url}/jwks.json", verify=cluster.b.ca)
        return {k["kid"] for k in answer.json()["keys"]}

    # B serves its document from memory for up to keys.JWKS_TTL seconds: the keys A signs
    # with now were published already (a rotation ahead); the new next keys appear then.
    deadline = time.monotonic() + 10 * keys.JWKS_TTL
    while (after := published_at_b()) == before and time.monotonic() < deadline:
        time.sleep(0.25)
    assert before < after and len(after - before) == 3  # a new next key per algorithm


def test_signing_out_at_a_ends_the_session_at_b(cluster):
    person = Person(cluster.a)
    person.sign_in(person.open(f"{cluster.a.url}/login"))
    at_b = Person(cluster.b)
    at_b.http = person.http
    assert at_b.open(f"{cluster.b.url}/account").final.endswith("/account")
    # Someone copies the session cookie: it works at B...
    thief = Person(cluster.b)
    for cookie in person.http.cookies:
        if cookie.name == "__Host-session":
            thief.http.cookies.set_cookie(cookie)
    assert thief.open(f"{cluster.b.url}/account").final.endswith("/account")
    account = person.open(f"{cluster.a.url}/account")
    person.submit(account, {}, action="/logout")
    assert "/login" in at_b.open(f"{cluster.b.url}/account").final
    # ...until its owner signs out at A: then B refuses the copy too.
    assert "/login" in thief.open(f"{cluster.b.url}/account").final


def test_a_remember_me_cookie_signed_out_of_at_a_is_refused_at_b(cluster):
    person = Person(cluster.a)
    page = person.open(f"{cluster.a.url}/login")
    person.submit(page, {"username": "alice", "password": PASSWORD, "remember": "y"})
    # Someone copies the remember-me cookie (not the session); the owner signs out at A.
    copied = next(c for c in person.http.cookies if c.name == "__Host-remember")
    person.submit(person.open(f"{cluster.a.url}/account"), {}, action="/logout")
    thief = Person(cluster.b)
    thief.http.cookies.set_cookie(copied)
    assert "/login" in thief.open(f"{cluster.b.url}/account").final


def test_a_copy_used_at_b_first_is_ended_by_the_owner_signing_in_again_at_a(cluster):
    person = Person(cluster.a)
    page = person.open(f"{cluster.a.url}/login")
    person.submit(page, {"username": "alice", "password": PASSWORD, "remember": "y"})
    copied = next(c for c in person.http.cookies if c.name == "__Host-remember")
    thief = Person(cluster.b)
    thief.http.cookies.set_cookie(copied)
    assert thief.open(f"{cluster.b.url}/account").final.endswith("/account")
    # The copy's session replaced the device's: the owner is asked to sign in at A...
    page = person.open(f"{cluster.a.url}/account")
    assert "/login" in page.final
    person.sign_in(page)
    # ...which ends the series, and the session the copy restored at B.
    assert "/login" in thief.open(f"{cluster.b.url}/account").final


def test_a_session_ended_from_the_account_page_at_a_is_refused_at_b(cluster):
    laptop = Person(cluster.a)
    laptop.sign_in(laptop.open(f"{cluster.a.url}/login"))
    phone = Person(cluster.b)
    phone.sign_in(phone.open(f"{cluster.b.url}/login"))
    assert phone.open(f"{cluster.b.url}/account").final.endswith("/account")
    # At A, the laptop ends "everywhere else": the phone's session, held at B, is over.
    account = laptop.open(f"{cluster.a.url}/account")
    laptop.submit(account, {}, action="/account/sessions/end-others")
    assert "/login" in phone.open(f"{cluster.b.url}/account").final
    assert laptop.open(f"{cluster.b.url}/account").final.endswith("/account")
