"""Fixtures chain app -> db -> user -> client; the database is SQLite, or PostgreSQL when
IDP_TEST_DATABASE_URL says so (make test runs the suite on both)."""

from __future__ import annotations

import os
import re
import secrets
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from identity import create_app
from identity.auth import accounts
from identity.extensions import db as _db

# Real slapd; OAuth provider emulator; an upstream OpenID provider; the IdP served over
# HTTPS for relying-party tests; SMTP; Redis.
pytest_plugins = [
    "ldap_server",
    "provider_emulator",
    "oidc_upstream_emulator",
    "oidc_rp",
    "smtp_server",
    "redis_server",
]

PASSWORD = "correct horse battery staple"
# Cheap argon2 parameters keep the suite fast; tests of the real parameters set their own.
# Production would refuse them: the suite's apps built with IDP_ENV=production accept them.
FAST_ARGON2 = {
    "ARGON2_MEMORY_COST": 1024,
    "ARGON2_TIME_COST": 1,
    "ARGON2_PARALLELISM": 1,
    "ALLOW_INSECURE_ARGON2": True,
}
CSRF_RE = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|'
    r'type="hidden" name="csrf_token" value="([^"]+)"|'
    r'name="csrf_token" value="([^"]+)"'
)


def _postgres_schema_url(base: str) -> tuple[str, str]:
    """A URL whose connections use a schema of their own, so parallel runs never collide."""
    schema = f"idp_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    base = os.environ.get("IDP_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
        return
    url, schema = _postgres_schema_url(base)
    yield url
    engine = create_engine(base, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def make_app(database_url: str, tmp_path, **overrides) -> Flask:
    settings = {
        "TESTING": True,
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": database_url,
        "ISSUER": "https://idp.test",
        "CERTS_DIR": str(tmp_path / "certs"),
        **FAST_ARGON2,
        # Tests that sign an admin in are about other things; tests/test_mfa*.py cover the
        # default ("admins") and "all".
        "MFA_REQUIRED": "none",
        **overrides,
    }
    return create_app(settings)


@pytest.fixture
def app_overrides() -> dict:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def app(database_url, tmp_path, app_overrides) -> Iterator[Flask]:
    app = make_app(database_url, tmp_path, **app_overrides)
    with app.app_context():
        _db.create_all()
    yield app
    dispose(app)


def dispose(app: Flask) -> None:
    """After a test: close LDAP pools, empty every table (children first) so the next test
    starts clean, and close the database connections."""
    app.extensions["idp.connectors"].close()
    with app.app_context():
        _db.session.remove()
        with _db.engine.begin() as conn:
            for table in reversed(_db.metadata.sorted_tables):
                conn.execute(table.delete())
        _db.engine.dispose()


@pytest.fixture
def db(app):
    """The database of `app`. Query it inside `with app.app_context():` and leave the context
    before making requests: a request reuses an app context that is already pushed, and
    would share `g` (CSRF token, current user) with the test."""
    return _db


@pytest.fixture
def user(app, db) -> SimpleNamespace:
    """A local account, as plain values (the ORM object would outlive its session)."""
    with app.app_context():
        u = accounts.create_local("alice", "Alice@Example.org", PASSWORD, name="Alice Liddell")
        return SimpleNamespace(id=u.id, username=u.username, email=u.email, password=PASSWORD)


class HttpsClient(FlaskClient):
    """Requests as served: over HTTPS, where __Host- cookies and Flask-WTF's Referer
    check apply."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("base_url", "https://localhost")
        return super().open(*args, **kwargs)


def https_client(app) -> FlaskClient:
    app.test_client_class = HttpsClient
    return app.test_client()


class Browser:
    """A test client that behaves like a browser on https://localhost: it sends the
    Referer that Flask-WTF's HTTPS check needs and reads CSRF tokens from pages."""

    def __init__(self, client: FlaskClient):
        self.client = client

    def get(self, path: str, **kw):
        return self.client.get(path, **kw)

    def csrf(self, path: str) -> str:
        return csrf_from(self.client.get(path).get_data(as_text=True))

    def post(
        self,
        path: str,
        data: dict | None = None,
        *,
        token_from: str | None = None,
        csrf: bool = True,
        **kw,
    ):
        data = dict(data or {})
        if csrf and "csrf_token" not in data:
            data["csrf_token"] = self.csrf(token_from or path)
        headers = {"Referer": f"https://localhost{token_from or path}", **kw.pop("headers", {})}
        return self.client.post(path, data=data, headers=headers, **kw)

    def login(self, username: str = "alice", password: str = PASSWORD, **extra):
        return self.post("/login", {"username": username, "password": password, **extra})

    def logout(self):
        return self.post("/logout", token_from="/account")


def csrf_from(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token on the page"
    return next(g for g in m.groups() if g)


@pytest.fixture
def client(app) -> FlaskClient:
    return https_client(app)


@pytest.fixture
def browser(client) -> Browser:
    return Browser(client)


def pytest_runtest_logreport(report):
    """Under CI a skipped test is a failure: CI runs the whole suite or says why not."""
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true: {report.longrepr}"
