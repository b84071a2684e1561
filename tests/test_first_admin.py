"""The first administrator from IDP_ADMIN_*: `flask setup` (the container's entry command)
creates it once, on SQLite and PostgreSQL, never prints its password, refuses a weak one
with the policy's words, and leaves everything alone on every later start. Real processes
in production mode, as the container runs them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import listen_port
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from conftest import make_app
from identity.admin import first_admin
from identity.auth import accounts
from identity.extensions import db
from identity.models import Event, User

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get(
    "IDP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Quotes and digits on purpose: read as JSON it would lose its quotes.
PASSWORD = '"Lovelace-1843" analytical'


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Iterator[str]:
    """An empty database of each kind: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'idp.sqlite3'}"
        return
    schema = f"idp_first_admin_{uuid.uuid4().hex[:10]}"
    engine = create_engine(POSTGRES, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES else "?"
    yield f"{POSTGRES}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def setup(database: str, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    """`flask --app idp setup` with the container's production settings and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_ENV="production",
        IDP_SECRET_KEY=secrets.token_hex(32),
        IDP_ISSUER="https://id.example.org",
        IDP_DATABASE_URL=database,
        IDP_CERTS_DIR=str(tmp_path / "certs"),
        IDP_ARGON2_MEMORY_COST="1024",
        IDP_ARGON2_TIME_COST="1",
        IDP_ALLOW_INSECURE_ARGON2="true",
        **{f"IDP_{k}": v for k, v in settings.items()},
    )
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "idp", "setup"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


ADA = {"ADMIN_USERNAME": "Ada", "ADMIN_EMAIL": "ada@example.org"}


def accounts_in(database: str, tmp_path: Path) -> list[tuple[str, str, bool]]:
    app = make_app(database, tmp_path)
    with app.app_context():
        found = [(u.username, u.email, u.is_admin) for u in db.session.scalars(select(User))]
        db.session.remove()
        db.engine.dispose()
    return found


def test_the_first_start_creates_the_admin_and_later_starts_leave_it(database, tmp_path):
    first = setup(database, tmp_path, **ADA, ADMIN_PASSWORD=PASSWORD)
    assert first.returncode == 0, first.stderr
    assert "created the administrator ada (ada@example.org) from IDP_ADMIN_USERNAME" in (
        first.stdout
    )
    assert "demo administrator" not in first.stdout
    assert not (tmp_path / "certs").exists()  # production: no local CA made
    again = setup(database, tmp_path, **ADA, ADMIN_PASSWORD="Another-passphrase-2026")
    assert again.returncode == 0, again.stderr
    assert "an administrator exists (ada): IDP_ADMIN_* only make the first one" in again.stdout
    for run in (first, again):
        assert PASSWORD not in run.stdout + run.stderr
        assert "Another-passphrase" not in run.stdout + run.stderr
        assert "Traceback" not in run.stderr
    app = make_app(database, tmp_path)
    with app.app_context():
        (ada,) = db.session.scalars(select(User)).all()
        assert (ada.username, ada.email, ada.is_admin) == ("ada", "ada@example.org", True)
        assert accounts.check_password(ada, PASSWORD)  # as typed, quotes and all
        assert [link.connector for link in ada.links] == ["local"]
        event = db.session.scalar(
            select(Event).where(Event.type == "admin.user_created").order_by(Event.id)
        )
        assert event.data == {"admin": True, "setup": "password", "via": "settings"}
        db.session.remove()
        db.engine.dispose()


def test_a_password_file_as_docker_secrets_give_it(database, tmp_path):
    secret = tmp_path / "idp_admin_password"
    secret.write_text(PASSWORD + "\n")
    # As compose.yaml with docs/docker.md's override gives them: an empty password is unset.
    r = setup(database, tmp_path, **ADA, ADMIN_PASSWORD="", ADMIN_PASSWORD_FILE=str(secret))
    assert r.returncode == 0, r.stderr
    assert "with the password of IDP_ADMIN_PASSWORD_FILE" in r.stdout
    app = make_app(database, tmp_path)
    with app.app_context():
        assert accounts.check_password(accounts.find("ada", by_email=False), PASSWORD)
        db.session.remove()
        db.engine.dispose()
    # The file gone (removed after the first start): restarts still work.
    secret.unlink()
    r = setup(database, tmp_path, **ADA, ADMIN_PASSWORD_FILE=str(secret))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "settings,message",
    [
        (
            {**ADA, "ADMIN_PASSWORD": "short1!"},
            "Error: IDP_ADMIN_PASSWORD: Use at least 12 characters.",
        ),
        (
            {**ADA, "ADMIN_PASSWORD": "Password1234!"},
            "Error: IDP_ADMIN_PASSWORD: This password is among the most common ones",
        ),
        (
            {**ADA, "ADMIN_PASSWORD": "ada@example.org"},
            "The password cannot be your e-mail address.",
        ),
        (
            {**ADA, "ADMIN_PASSWORD": "tab\tin the password"},
            "Error: IDP_ADMIN_PASSWORD: it contains control characters",
        ),
        (
            {**ADA, "ADMIN_PASSWORD_FILE": "/nonexistent/secret"},
            "Error: IDP_ADMIN_PASSWORD_FILE: cannot read /nonexistent/secret "
            "(No such file or directory)",
        ),
        (ADA, "Error: IDP_ADMIN_USERNAME is set but neither IDP_ADMIN_PASSWORD nor"),
        (
            {
                "ADMIN_USERNAME": "-ada",
                "ADMIN_EMAIL": "ada@example.org",
                "ADMIN_PASSWORD": PASSWORD,
            },
            "Error: IDP_ADMIN_USERNAME: use 2 to 64 characters",
        ),
        (
            {"ADMIN_USERNAME": "ada", "ADMIN_EMAIL": "ada@", "ADMIN_PASSWORD": PASSWORD},
            "Error: IDP_ADMIN_EMAIL: ",
        ),
        (
            {"ADMIN_USERNAME": "ada", "ADMIN_EMAIL": "ada@example.org\r\nBcc: x@evil.example"},
            "Error: IDP_ADMIN_EMAIL: not a valid e-mail address",
        ),
        # The shape of the settings: refused before anything else, by the configuration.
        ({"ADMIN_PASSWORD": PASSWORD}, "IDP_ADMIN_PASSWORD is set but IDP_ADMIN_USERNAME is not"),
        ({"ADMIN_USERNAME": "ada"}, "IDP_ADMIN_USERNAME and IDP_ADMIN_EMAIL go together"),
        (
            {**ADA, "ADMIN_PASSWORD": PASSWORD, "ADMIN_PASSWORD_FILE": "/run/secrets/x"},
            "set IDP_ADMIN_PASSWORD or IDP_ADMIN_PASSWORD_FILE, not both",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line_naming_the_setting(tmp_path, settings, message):
    database = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    r = setup(database, tmp_path, **settings)
    assert r.returncode == 1, r.stdout
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "IDP_ADMIN" in line]
    assert len(errors) == 1, r.stderr
    if "ADMIN_PASSWORD" in settings and settings["ADMIN_PASSWORD"] != "ada@example.org":
        assert settings["ADMIN_PASSWORD"] not in r.stdout + r.stderr
    if (tmp_path / "idp.sqlite3").exists() and "go together" not in message:
        assert accounts_in(database, tmp_path) == []


def test_a_bad_password_file_is_refused(tmp_path):
    database = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    secret = tmp_path / "secret"
    for content, message in [
        (b"first line\nsecond line\n", "has more than one line"),
        (b"\xff\xfe not text at all", "is not UTF-8 text"),
        (b"x" * 70_000, "is larger than 65536 bytes"),
    ]:
        secret.write_bytes(content)
        r = setup(database, tmp_path, **ADA, ADMIN_PASSWORD_FILE=str(secret))
        assert r.returncode == 1 and f"IDP_ADMIN_PASSWORD_FILE: {secret} {message}" in r.stderr


def test_an_account_of_that_name_is_never_promoted(database, tmp_path):
    """Someone registered `ada` before the first start: the setting must not make that
    stranger an administrator."""
    assert setup(database, tmp_path).returncode == 0  # the tables, no account yet
    app = make_app(database, tmp_path)
    with app.app_context():
        accounts.create_local("ada", "someone@example.net", "their own passphrase 9")
        db.session.remove()
        db.engine.dispose()
    r = setup(database, tmp_path, **ADA, ADMIN_PASSWORD=PASSWORD)
    assert r.returncode == 1
    assert (
        "Error: IDP_ADMIN_USERNAME: the account ada exists and is not an administrator; choose "
        "another username, or make that account one with `flask --app idp user set-admin ada`"
    ) in r.stderr
    r = setup(
        database,
        tmp_path,
        ADMIN_EMAIL="SOMEONE@example.net",
        ADMIN_USERNAME="ana",
        ADMIN_PASSWORD=PASSWORD,
    )
    assert r.returncode == 1 and "IDP_ADMIN_EMAIL: another account uses" in r.stderr
    assert accounts_in(database, tmp_path) == [("ada", "someone@example.net", False)]


def test_production_without_the_settings_says_how_and_prints_no_password(tmp_path):
    database = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    r = setup(database, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no administrator yet: set IDP_ADMIN_USERNAME, IDP_ADMIN_EMAIL and" in r.stdout
    assert "password:" not in r.stdout and accounts_in(database, tmp_path) == []


def test_two_nodes_starting_together_make_one_admin(tmp_path, monkeypatch, database):
    """Both checked before either committed: the second insert fails on the unique username,
    and that start goes on as if it had found the administrator."""
    app = make_app(
        database,
        tmp_path,
        ADMIN_USERNAME="ada",
        ADMIN_EMAIL="ada@example.org",
        ADMIN_PASSWORD=PASSWORD,
    )
    said: list[str] = []
    with app.app_context():
        db.create_all()
        first_admin.ensure(said.append)  # node A
        real = first_admin.administrators
        looked: list[bool] = []

        def administrators() -> list[str]:  # the first look sees none yet
            looked.append(True)
            return [] if len(looked) == 1 else real()

        monkeypatch.setattr(first_admin, "administrators", administrators)
        monkeypatch.setattr(first_admin.local_accounts, "find", lambda *a, **k: None)
        monkeypatch.setattr(first_admin.local_accounts, "email_taken", lambda *a: False)
        first_admin.ensure(said.append)  # node B, which looked before A committed
        assert db.session.scalars(select(User.username)).all() == ["ada"]
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
    assert said[1] == "the administrator ada was created meanwhile by another process"


def test_a_disabled_administrator_of_that_name_is_named_not_replaced(tmp_path):
    database = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    assert setup(database, tmp_path, **ADA, ADMIN_PASSWORD=PASSWORD).returncode == 0
    app = make_app(database, tmp_path)
    with app.app_context():
        ada = accounts.find("ada", by_email=False)
        ada.disabled = True
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    r = setup(database, tmp_path, **ADA, ADMIN_PASSWORD=PASSWORD)
    assert r.returncode == 1
    assert (
        "Error: IDP_ADMIN_USERNAME: the administrator ada exists but is disabled; enable it "
        "with `flask --app idp user enable ada`"
    ) in r.stderr


def test_a_database_that_cannot_be_reached_is_one_line(tmp_path):
    port = listen_port()  # nothing listens there
    r = setup(f"postgresql+psycopg://idp:idp@127.0.0.1:{port}/idp", tmp_path, **ADA)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: the database cannot be used (connection failed:")
    )
    assert r.stderr.strip().endswith("check IDP_DATABASE_URL")
