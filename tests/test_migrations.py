"""Migrations produce exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from conftest import make_app as _make_app
from identity.extensions import db
from identity.migration_commands import bind
from identity.models import User


def make_app(url, tmp_path):
    """An app with Flask-Migrate bound, as `flask db` binds it."""
    app = _make_app(url, tmp_path)
    bind(app)
    return app


def fresh_database_url(tmp_path) -> tuple[str, callable]:
    base = os.environ.get("IDP_TEST_DATABASE_URL")
    if not base:
        return f"sqlite:///{tmp_path}/migrations.sqlite3", lambda: None
    schema = f"idp_mig_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop():
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def test_upgrade_matches_models_and_downgrade_empties(tmp_path):
    url, drop = fresh_database_url(tmp_path)
    app = make_app(url, tmp_path)
    try:
        with app.app_context():
            upgrade()
            with db.engine.connect() as conn:
                diff = compare_metadata(
                    MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata
                )
            assert diff == [], f"models and migrations differ: {diff}"
            downgrade(revision="base")
            tables = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
            assert tables == set()
            upgrade()  # and back up again, as an upgrade after a rollback would
            db.engine.dispose()
    finally:
        drop()


def test_upgrade_keeps_existing_accounts(tmp_path):
    """An account created at the first revision survives the upgrade to head, intact."""
    url, drop = fresh_database_url(tmp_path)
    app = make_app(url, tmp_path)
    try:
        with app.app_context():
            upgrade(revision="bcf8b162e96f")
            with db.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO users (username, email, email_key, email_verified, "
                        "password_hash, is_admin, disabled, session_epoch, created_at) VALUES "
                        "('old', 'Old@example.org', 'old@example.org', false, 'h', true, false, "
                        "'e', CURRENT_TIMESTAMP)"
                    )
                )
                conn.execute(
                    text(
                        "INSERT INTO linked_identities (user_id, connector, subject, created_at) "
                        "SELECT id, 'ldap', 'uuid-1', CURRENT_TIMESTAMP FROM users"
                    )
                )
                conn.execute(
                    text(
                        "INSERT INTO audit_events (created_at, type, user_id, data) "
                        "SELECT CURRENT_TIMESTAMP, 'register', id, '{}' FROM users"
                    )
                )
            upgrade()
            with db.engine.connect() as conn:
                row = conn.execute(
                    text("SELECT username, email, is_admin, groups, subject FROM users")
                ).one()
                link = conn.execute(text("SELECT connector, subject FROM linked_identities")).one()
                events = conn.execute(text("SELECT type FROM audit_events")).scalars().all()
            assert row[:3] == ("old", "Old@example.org", True)
            assert row[3] in ([], "[]")
            assert str(uuid.UUID(row[4])) == row[4]  # the OIDC subject, given by the migration
            assert tuple(link) == ("ldap", "uuid-1") and events == ["register"]
            db.engine.dispose()
    finally:
        drop()


def test_upgrade_folds_the_e_mail_keys_of_existing_accounts(tmp_path):
    """Keys stored lower-cased before names.fold are folded, so that the accounts are found
    by any form of their address; two addresses that fold alike keep the first one's key."""
    url, drop = fresh_database_url(tmp_path)
    app = make_app(url, tmp_path)
    try:
        with app.app_context():
            upgrade(revision="5bd88d18817c")
            with db.engine.begin() as conn:
                for n, (email, key) in enumerate(
                    [
                        ("Stra\u00dfe@Example.org", "stra\u00dfe@example.org"),
                        ("\uff2a\uff4f@example.org", "\uff4a\uff4f@example.org"),
                        ("jo@example.org", "jo@example.org"),
                        ("plain@example.org", "plain@example.org"),
                    ]
                ):
                    conn.execute(
                        text(
                            "INSERT INTO users (username, email, email_key, email_verified, "
                            "is_admin, disabled, session_epoch, subject, groups, created_at) "
                            "VALUES (:u, :e, :k, false, false, false, 'e', :s, '[]', "
                            "CURRENT_TIMESTAMP)"
                        ),
                        {"u": f"user{n}", "e": email, "k": key, "s": str(uuid.uuid4())},
                    )
            upgrade()
            with db.engine.connect() as conn:
                keys = dict(conn.execute(text("SELECT username, email_key FROM users")).all())
            assert keys == {
                "user0": "strasse@example.org",
                # Folds to jo@example.org, which user2 has: left as it was.
                "user1": "\uff4a\uff4f@example.org",
                "user2": "jo@example.org",
                "user3": "plain@example.org",
            }
            assert User.find("STRASSE@example.org").username == "user0"
            db.session.remove()  # its connection, before the downgrade and the dispose
            downgrade(revision="5bd88d18817c")
            with db.engine.connect() as conn:
                keys = dict(conn.execute(text("SELECT username, email_key FROM users")).all())
            assert keys["user0"] == "stra\u00dfe@example.org"
            db.engine.dispose()
    finally:
        drop()
