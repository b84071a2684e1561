"""Flask-Migrate (Alembic) bound to the app on first use: `flask db` and `flask setup` load
it, a worker answering requests never does (11 MB of Alembic, Mako and Pygments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app

from identity.extensions import db

DIRECTORY = Path(__file__).resolve().parent / "migrations"


def bind(app: Flask) -> Any:
    """Flask-Migrate attached to `app`, once: app.extensions["migrate"], which
    identity/migrations/env.py reads."""
    if "migrate" not in app.extensions:
        from flask_migrate import Migrate

        # Batch mode and type comparison: migrations alter tables on SQLite too.
        Migrate(app, db, directory=str(DIRECTORY), render_as_batch=True, compare_type=True)
    return app.extensions["migrate"]


class Commands(click.Command):
    """`flask db`: stands in for Flask-Migrate's command group, imported and bound when the
    command line names it (the app context is there: Flask's command group pushed it)."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        bind(current_app._get_current_object())
        from flask_migrate.cli import db as group

        return group.make_context(info_name, args, parent=parent, **extra)


def install(app: Flask) -> None:
    """The `db` command group, its commands loaded on first use."""
    app.cli.add_command(Commands("db", help="Perform database migrations."))
