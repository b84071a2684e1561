"""The instance folder and the SQLite database hold the secret key, password hashes and
encrypted signing keys: they are created readable by their owner only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import config

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def usual_umask():
    """The usual umask (group and others may read): what the service must not rely on."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_fresh_instance_folder_and_database_are_private(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("IDP_"):
            monkeypatch.delenv(key)
    instance = tmp_path / "instance"
    app = Flask("t", instance_path=str(instance), root_path=str(ROOT / "identity"))
    with usual_umask():
        config.load(app)
        database = instance / "idp.sqlite3"
        assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{database}"
        import identity  # noqa: F401  (its connect hook turns WAL on, as the service runs)

        engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
        with engine.begin() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            conn.execute(text("CREATE TABLE t (x TEXT)"))
            conn.execute(text("INSERT INTO t VALUES ('secret')"))
            # The write-ahead log and shared-memory files exist while a connection is open.
            wal = [Path(f"{database}-wal"), Path(f"{database}-shm")]
            assert all(p.exists() for p in wal)
            assert [mode(p) for p in wal] == [0o600, 0o600]
        engine.dispose()
    assert mode(instance) == 0o700
    assert mode(instance / "secret_key") == 0o600
    assert mode(database) == 0o600


def setup(tmp_path: Path, database: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_DATABASE_URL=f"sqlite:///{database}",
        IDP_SECRET_KEY="k" * 64,
        IDP_CERTS_DIR=str(tmp_path / "certs"),
        IDP_ARGON2_MEMORY_COST="1024",
        IDP_ARGON2_TIME_COST="1",
    )
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "idp", "setup"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),
    )


def test_flask_setup_makes_a_private_database_and_tightens_an_old_one(tmp_path):
    database = tmp_path / "data" / "idp.sqlite3"
    database.parent.mkdir()
    r = setup(tmp_path, database)
    assert r.returncode == 0, r.stderr
    assert "A demo administrator was created" in r.stdout
    assert mode(database) == 0o600
    for end in ("-wal", "-shm"):
        if Path(f"{database}{end}").exists():
            assert mode(Path(f"{database}{end}")) == 0o600

    # A database left readable by others (an install from before): setup makes it private.
    database.chmod(0o644)
    r = setup(tmp_path, database)
    assert r.returncode == 0, r.stderr
    assert f"made {database} readable by its owner only" in r.stdout
    assert mode(database) == 0o600
