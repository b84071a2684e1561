"""First run: certificates, database and a demo admin; and the HTTPS development server."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
from flask import Flask, current_app
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from werkzeug.serving import get_sockaddr, is_running_from_reloader, select_address_family

from identity import certs, migration_commands
from identity.admin import first_admin
from identity.auth import accounts
from identity.extensions import db
from identity.models import User
from identity.oidc import keys
from identity.passwords import policy_errors
from identity.settings.files import sqlite_file


@click.command("setup")
def setup_command() -> None:
    """Create or upgrade the database, signing keys and the first administrator (from
    IDP_ADMIN_*, else a demo admin in development); certificates in development."""
    # The local CA serves the development server; behind a proxy (production) it is unused.
    try:
        password = prepare(click.echo, certificates=current_app.config["ENV"] == "development")
    except OperationalError as exc:  # the container's first command: one line, no traceback
        first = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise click.ClickException(
            f"the database cannot be used ({first}): check IDP_DATABASE_URL"
        ) from None
    if password:
        click.echo(admin_box(password, current_app.config["ISSUER"]))


def prepare(echo: Callable[[str], object], certificates: bool = True) -> str | None:
    """The local CA's certificates (unless `certificates` is false), the database at the
    newest revision, signing keys, and the first administrator: from IDP_ADMIN_* when set
    (identity.admin.first_admin), else in development a demo admin when there is no
    account yet. Each step is reported through
    `echo` in one line; returns the demo admin's password when one was created (it is shown
    once: the caller shows it last), else None."""
    cfg = current_app.config
    for path in _owner_only(cfg["DATABASE_URL"], Path(current_app.instance_path)):
        echo(f"made {path} readable by its owner only")
    if certificates:
        for path in certs.ensure(cfg["CERTS_DIR"], certs.hosts_for(cfg["HOST"])):
            echo(f"wrote {path}")
    before = _revision()
    # quiet: one line here instead of alembic's line per migration (migrations/env.py).
    from flask_migrate import upgrade

    upgrade(directory=migration_commands.bind(current_app).directory, x_arg=["quiet=true"])
    after = _revision()
    if before is None:
        echo(f"created the database (revision {after})")
    elif before != after:
        echo(f"upgraded the database from revision {before} to {after}")
    for key in keys.ensure_keys():
        echo(f"created signing key {key.alg} {key.kid} ({key.state})")
    if cfg["ADMIN_USERNAME"]:
        first_admin.ensure(echo)
        return None
    if cfg["ENV"] == "production":
        # No demo password in a production log: the operator names the first administrator.
        if not first_admin.administrators():
            echo(
                "no administrator yet: set IDP_ADMIN_USERNAME, IDP_ADMIN_EMAIL and "
                "IDP_ADMIN_PASSWORD_FILE (or IDP_ADMIN_PASSWORD) and run this again, or "
                "create one with `flask --app idp user create --admin`"
            )
        return None
    if db.session.scalar(select(func.count(User.id))) != 0:
        return None
    password = secrets.token_urlsafe(12)
    while policy_errors(password, "admin", "admin@example.com"):  # the same rules as all
        password = secrets.token_urlsafe(12)
    accounts.create_local(
        "admin", "admin@example.com", password, admin=True, name="Demo administrator"
    )
    return password


def admin_box(password: str, issuer: str, flask: str | None = None) -> str:
    """The demo admin's username and password in a frame of characters, with where to sign
    in and how to set a new password (with `flask`, this environment's command by default),
    so that it stands out at the end of the output."""
    lines = [
        "A demo administrator was created. Its password is shown only this once:",
        "",
        "    username: admin",
        f"    password: {password}",
        "",
        f"Sign in at {issuer.rstrip('/')}/login. Set a new password on the account",
        "page, or with",
        f"    {flask or _flask_command()} user set-password admin --password-stdin",
    ]
    width = max(len(line) for line in lines)
    rule = "+" + "-" * (width + 4) + "+"
    return "\n".join(["", rule, *(f"|  {line:<{width}}  |" for line in lines), rule, ""])


def serve(app: Flask) -> None:
    """What `make run` runs: check that IDP_PORT is free (else exit with a message naming
    it), set up as `flask setup` does, show the demo admin's password last, then serve
    HTTPS with the certificate under certs/ (development server; `make serve` in
    production)."""
    cfg = app.config
    d = Path(cfg["CERTS_DIR"])
    if not is_running_from_reloader():  # the reloader's child: the parent did all this
        if problem := _cannot_listen(cfg["HOST"], cfg["PORT"], cfg["ISSUER"]):
            sys.exit(problem)
        with app.app_context():
            password = prepare(lambda line: print(line, flush=True))
        print(f" * Trust the local CA once: {d / certs.CA_CERT}", flush=True)
        if password:
            print(admin_box(password, cfg["ISSUER"]), flush=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(d / certs.TLS_CERT, d / certs.TLS_KEY)
    app.run(
        host=cfg["HOST"], port=cfg["PORT"], ssl_context=context, debug=cfg["DEBUG"], threaded=True
    )


def _cannot_listen(host: str, port: int, issuer: str) -> str | None:
    """Why the server could not listen on host:port (a message naming the setting to
    change), or None when it can. Checked before setup so that a taken port is said
    first, not after the one-time password (werkzeug's own message names no setting)."""
    try:
        _bind(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return f"idp: cannot listen on {host}:{port} ({exc}): check IDP_HOST and IDP_PORT"
        free = next((p for p in range(port + 1, min(port + 50, 65536)) if _free(host, p)), None)
        other = free or port + 1
        settings = f"IDP_PORT={other}"
        address = urlsplit(issuer)
        if address.port == port:  # the issuer names the port too: it must follow
            host_part = address.netloc.rsplit(":", 1)[0]
            settings += f" IDP_ISSUER={urlunsplit(address._replace(netloc=f'{host_part}:{other}'))}"
        return (
            f"idp: port {port} is in use (IDP_PORT): stop the other program, "
            f"or start with {settings} make run"
        )
    return None


def _bind(host: str, port: int) -> None:
    """Bind host:port as werkzeug will (same address family and SO_REUSEADDR), then let go."""
    family = select_address_family(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(get_sockaddr(host, port, family))


def _free(host: str, port: int) -> bool:
    try:
        _bind(host, port)
    except OSError:
        return False
    return True


def _flask_command() -> str:
    """`flask --app idp` as this interpreter's environment has it: `.venv/bin/flask` under
    `make run`, so that the command works without activating the virtualenv."""
    flask = Path(sys.executable).parent / "flask"
    if not flask.exists():
        return "flask --app idp"
    relative = os.path.relpath(flask)
    shown = relative if not relative.startswith("..") else str(flask)
    return f"{shown} --app idp"


def _revision() -> str | None:
    """The database's alembic revision; None for a database without one (new)."""
    from alembic.migration import MigrationContext

    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


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
