"""The command-line group class: database trouble becomes one line, never a stack trace."""

from __future__ import annotations

import click
from flask.cli import AppGroup
from sqlalchemy.exc import OperationalError, ProgrammingError


class Group(AppGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (OperationalError, ProgrammingError) as exc:
            first = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
            raise click.ClickException(
                f"the database is not ready ({first}); create or upgrade it with "
                "`flask --app idp db upgrade`"
            ) from None
