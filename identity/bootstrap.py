"""First run: certificates, database and a demo admin; and the HTTPS development server."""

from __future__ import annotations

import secrets
import ssl
from pathlib import Path

import click
from flask import Flask, current_app
from flask_migrate import upgrade
from sqlalchemy import func, select

from config import sqlite_file
from identity import certs
from identity.auth import accounts
from identity.extensions import db
from identity.models import User
from identity.oidc import keys
from identity.passwords import policy_errors


@click.command("setup")
def setup_command() -> None:
    """Create certificates, create or upgrade the database, and a demo admin if it is new."""
    cfg = current_app.config
    for path in _owner_only(cfg["DATABASE_URL"], Path(current_app.instance_path)):
        click.echo(f"made {path} readable by its owner only")
    for path in certs.ensure(cfg["CERTS_DIR"], certs.hosts_for(cfg["HOST"])):
        click.echo(f"wrote {path}")
    upgrade(directory=current_app.extensions["migrate"].directory)
    for key in keys.ensure_keys():
        click.echo(f"created signing key {key.alg} {key.kid} ({key.state})")
    if db.session.scalar(select(func.count(User.id))) == 0:
        password = secrets.token_urlsafe(12)
        while policy_errors(password, "admin", "admin@example.com"):  # the same rules as all
            password = secrets.token_urlsafe(12)
        accounts.create_local(
            "admin", "admin@example.com", password, admin=True, name="Demo administrator"
        )
        click.echo("")
        click.echo("  A demo administrator was created. Its password is shown only this once:")
        click.echo(f"    username: admin    password: {password}")
        click.echo("  Change it on the account page after signing in.")
        click.echo("")


def _owner_only(database_url: str, instance: Path) -> list[Path]:
    """The instance folder and SQLite database files that others could read (an install
    from before they were created private), made private; the paths changed."""
    candidates = [(instance, 0o700)]
    if database := sqlite_file(database_url):
        candidates += [(Path(f"{database}{end}"), 0o600) for end in ("", "-wal", "-shm")]
    changed = []
    for path, mode in candidates:
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(mode)
            changed.append(path)
    return changed


def serve(app: Flask) -> None:
    """Serve HTTPS with the certificate under certs/ (development server; use gunicorn in
    production)."""
    cfg = app.config
    d = Path(cfg["CERTS_DIR"])
    with app.app_context():
        certs.ensure(d, certs.hosts_for(cfg["HOST"]))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(d / certs.TLS_CERT, d / certs.TLS_KEY)
    print(f" * Trust the local CA once: {d / certs.CA_CERT}")
    app.run(
        host=cfg["HOST"], port=cfg["PORT"], ssl_context=context, debug=cfg["DEBUG"], threaded=True
    )
