"""The identity provider: create_app() wires configuration, extensions, connectors and pages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from config import ConfigError, load

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ConfigError", "create_app"]


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the app from Config, the IDP_* environment and `overrides` (tests)."""
    app = Flask(
        __name__, instance_path=str(ROOT / "instance"), template_folder=str(ROOT / "templates")
    )
    # Settings: class defaults, then IDP_* variables; refuses insecure production settings.
    load(app, overrides)
    # Request ids (first, so every later log line has one), JSON logs, /healthz, /readyz,
    # /metrics.
    from identity import ops

    ops.install(app)
    for message in app.config["INSECURE_ALLOWED"]:  # production told to accept these
        logging.getLogger("identity.config").error("%s", message)
    # Behind N reverse proxies: the client's address and scheme from the last N entries of
    # X-Forwarded-For/-Proto, which those proxies wrote; entries further left are the
    # client's own and are ignored. With none, no header is believed.
    if app.config["TRUSTED_PROXIES"]:
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)

    # Database and migrations; importing models registers the tables.
    from identity import (
        database,
        errors,
        migration_commands,
        models,  # noqa: F401
        security,
        throttle,
    )
    from identity.extensions import csrf, db, login_manager

    db.init_app(app)
    with app.app_context():
        database.install(db.engine)
    _close_sessions_safely(app, db)
    # `flask db`: Flask-Migrate loaded by the commands that need it, never by a worker.
    migration_commands.install(app)
    # Non-UTF-8 form bodies are refused before anything reads them; then CSRF on every POST.
    security.install_utf8_check(app)
    csrf.init_app(app)
    # Brute-force protection: sign-in lockouts and token limits, counted with `limits`.
    throttle.install(app)
    # Sessions: who is signed in, and where to send those who are not.
    _init_login(app, login_manager)
    # Connectors, in the order the login form tries them.
    _init_connectors(app)
    # Pages and command-line groups.
    from identity.admin import bp as admin_bp
    from identity.admin.cli_audit import audit_cli
    from identity.admin.cli_ldap import ldap_cli
    from identity.admin.cli_upstreams import upstream_cli
    from identity.admin.cli_users import user_cli
    from identity.auth import bp as auth_bp
    from identity.bootstrap import setup_command
    from identity.certs import bp as certs_bp
    from identity.forward_auth import bp as forward_auth_bp
    from identity.forward_auth.cli import forward_auth_cli

    app.register_blueprint(auth_bp)
    app.register_blueprint(certs_bp)
    # The brand (IDP_BRAND_*): every template's `brand`, and /brand.css for the accent.
    from identity import brand

    brand.init_app(app)
    from identity.oidc import bp as oidc_bp
    from identity.oidc import logout as oidc_logout
    from identity.oidc import server as oidc_server
    from identity.oidc.client_cli import client_cli
    from identity.oidc.keys import keys_cli

    app.register_blueprint(admin_bp)
    # Forward authentication for reverse proxies (after auth: it sends people to /login).
    app.register_blueprint(forward_auth_bp)
    # The OpenID Connect provider: Authlib's authorization server, our keys and storage.
    oidc_server.init_app(app)
    # Back-channel logouts not delivered yet are retried, looked for after requests.
    oidc_logout.init_app(app)
    app.register_blueprint(oidc_bp)
    app.cli.add_command(keys_cli)
    app.cli.add_command(client_cli)
    app.cli.add_command(user_cli)
    app.cli.add_command(audit_cli)
    app.cli.add_command(ldap_cli)
    app.cli.add_command(forward_auth_cli)
    app.cli.add_command(upstream_cli)
    app.cli.add_command(setup_command)
    # Security headers on every response; error pages that never show a stack trace.
    security.install_headers(app)
    app.session_interface = security.SessionCookies()
    errors.install(app)
    return app


def _init_login(app: Flask, login_manager) -> None:
    from flask import redirect, request, url_for

    from identity.errors import render_error, wants_json
    from identity.extensions import db
    from identity.models import User

    login_manager.init_app(app)

    @login_manager.user_loader
    def load_user(session_id: str) -> User | None:
        # "id.epoch": a changed epoch (password change, admin action) ends the session.
        user_id, _, epoch = session_id.partition(".")
        if not user_id.isdigit() or not epoch:
            return None
        # Usually read already, with the session's record (auth.sessions.seen): no query.
        user = db.session.get(User, int(user_id))
        if user is None or user.session_epoch != epoch or user.disabled:
            return None
        return user

    # The remember-me cookie is a server-side token (identity.auth.remember), never a
    # signed user id.
    from identity.auth.signin import restore

    login_manager.remember_loader(restore)

    @login_manager.unauthorized_handler
    def unauthorized():
        if wants_json():
            return render_error(401)
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _init_connectors(app: Flask) -> None:
    from identity import passwords
    from identity.connectors.local import LocalConnector

    # The libraries of a connector (ldap3, Flask-Dance, oauthlib, requests, Authlib's client:
    # 12 MB a worker) are loaded only when it is configured.
    def ldap() -> Any:
        from identity.connectors.ldap import LdapConnector
        from identity.connectors.ldap_connection import Settings

        settings = Settings.from_config(app.config)
        if settings.skip_verify:
            logging.getLogger("identity.ldap").error(
                "IDP_LDAP_TLS_INSECURE_SKIP_VERIFY is on: directory certificates are NOT "
                "verified; anyone on the network path can read passwords"
            )
        return LdapConnector(settings)

    available = {"local": LocalConnector, "ldap": ldap}
    names = app.config["PASSWORD_CONNECTORS"]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ConfigError(
            f"IDP_PASSWORD_CONNECTORS names unknown connectors {unknown}; "
            f"available: {sorted(available)}"
        )
    if "ldap" in names and not app.config["LDAP_URL"]:
        raise ConfigError("IDP_PASSWORD_CONNECTORS names ldap but IDP_LDAP_URL is not set")
    # One registry: the password connectors in the order the login form tries them, then
    # the redirect connectors (a button each) in the order of their buttons.
    from identity.auth.finalize import handler
    from identity.connectors import providers
    from identity.connectors.registry import DIRECTORY, LDAP_LABEL, Registry

    known = {"local": LocalConnector.label, "ldap": LDAP_LABEL}
    known |= {p.id: p.label for p in providers.PROVIDERS.values()}
    registry = Registry(known_labels=known, known_policies={"ldap": DIRECTORY})
    for name in names:
        registry.add(available[name]())
    if configured := providers.configured(app.config):
        from identity.connectors import oauth2

        for provider in configured:
            connector = oauth2.OAuth2Connector(provider)
            connector.init_app(app, handler)
            registry.add(connector)
    # Upstream OpenID providers: IDP_OIDC_UPSTREAMS here, then those stored from the admin
    # console, read again every IDP_CLIENT_CACHE_SECONDS (an entry here wins an id).
    from identity.connectors import upstream_registry

    if app.config["OIDC_UPSTREAMS"]:
        from identity.connectors import oidc_upstream

        for connector in oidc_upstream.configured(app):
            connector.init_app(app, handler)
            registry.add(connector)
    registry.add_source(upstream_registry.StoredUpstreams(app, handler))
    app.extensions["idp.connectors"] = registry
    with app.app_context():
        passwords.warm_up()


def _close_sessions_safely(app: Flask, db) -> None:
    """Runs before Flask-SQLAlchemy's own teardown (teardowns run in reverse order): closing a
    session whose connection the database killed (restart, failover) raises, and the request
    that already had its answer would turn into a bare 500. The dead connection is dropped
    instead; the pool opens a new one for the next request (identity.database)."""
    import contextlib

    from sqlalchemy.exc import DBAPIError

    @app.teardown_appcontext
    def _close(_exc) -> None:
        if not db.session.registry.has():
            return  # this request never used the database
        session = db.session()
        try:
            session.close()
        except DBAPIError as error:
            logging.getLogger("identity.errors").warning(
                "database connection lost at the end of a request: %s", error.orig
            )
            with contextlib.suppress(Exception):
                session.invalidate()
        db.session.remove()


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """SQLite: WAL and NORMAL sync (about twice the commit rate), and enforced foreign keys."""
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()
