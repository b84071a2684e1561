"""The first administrator, created from IDP_ADMIN_* by `flask setup` when there is none.

A container has nobody at a terminal to read a generated password, so the operator gives
the first administrator in settings (the password as a Docker secret file, best). Every
start runs this: it creates the account only while the database has no active
administrator, so restarts, and nodes starting together, leave it alone. The password is
read only then, checked by the password policy, and never printed or logged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from flask import current_app
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from identity.admin import accounts, new_account
from identity.auth import accounts as local_accounts
from identity.extensions import db
from identity.models import User

SETTINGS = {"username": "IDP_ADMIN_USERNAME", "email": "IDP_ADMIN_EMAIL"}
MAX_FILE = 64 * 1024


def administrators() -> list[str]:
    """The usernames of the active administrators: their own flag, or the directory's
    admin group (IDP_LDAP_ADMIN_GROUP) as they had it at their last sign-in."""
    query = (
        select(User)
        .where(User.disabled.is_(False))
        .where(or_(User.is_admin.is_(True), User.group_dns.is_not(None)))
        .order_by(User.id)
    )
    return [u.username for u in db.session.scalars(query) if u.is_administrator]


def ensure(echo: Callable[[str], object]) -> None:
    """Create the administrator IDP_ADMIN_* describe unless an active administrator exists;
    say what happened in one line through `echo`. A value that breaks the rules, or an
    account of that name that is no administrator, raises a one-line ClickException that
    names the setting."""
    cfg = current_app.config
    if existing := administrators():
        echo(
            f"an administrator exists ({', '.join(existing[:3])}): IDP_ADMIN_* only make the "
            "first one and were not used; set passwords on the account page or with "
            "`flask --app idp user set-password`"
        )
        return
    try:
        username, email = new_account.names(cfg["ADMIN_USERNAME"], cfg["ADMIN_EMAIL"])
        password = _password(cfg)
        new_account.password(password, username, email)
    except new_account.Invalid as invalid:
        setting = SETTINGS.get(invalid.field) or _password_setting(cfg)
        raise click.ClickException(f"{setting}: {invalid.detail}") from None
    other = local_accounts.find(username, by_email=False)
    if other is not None and other.is_admin:  # the only administrators are disabled
        raise click.ClickException(
            f"IDP_ADMIN_USERNAME: the administrator {other.username} exists but is disabled; "
            f"enable it with `flask --app idp user enable {other.username}`"
        )
    if other is not None:
        # Never promote it: anyone could have registered that name before this start.
        raise click.ClickException(
            f"IDP_ADMIN_USERNAME: the account {other.username} exists and is not an "
            "administrator; choose another username, or make that account one with "
            f"`flask --app idp user set-admin {other.username}`"
        )
    if local_accounts.email_taken(email):
        raise click.ClickException(
            f"IDP_ADMIN_EMAIL: another account uses {email}; choose another address"
        )
    try:
        accounts.create(username, email, admin=True, password=password, via="settings")
    except IntegrityError:
        db.session.rollback()  # another node, starting at the same moment, made it first
        if not administrators():
            raise click.ClickException(
                "IDP_ADMIN_USERNAME: the username or e-mail address was taken meanwhile"
            ) from None
        echo(f"the administrator {username} was created meanwhile by another process")
        return
    echo(
        f"created the administrator {username} ({email}) from IDP_ADMIN_USERNAME; "
        f"sign in at {cfg['ISSUER']}/login with the password of {_password_setting(cfg)}"
    )


def _password_setting(cfg) -> str:
    return "IDP_ADMIN_PASSWORD_FILE" if cfg["ADMIN_PASSWORD_FILE"] else "IDP_ADMIN_PASSWORD"


def _password(cfg) -> str:
    """The password from IDP_ADMIN_PASSWORD, or the file IDP_ADMIN_PASSWORD_FILE names (one
    line; its line break is not part of it); raises Invalid."""
    if cfg["ADMIN_PASSWORD"] is not None:
        return cfg["ADMIN_PASSWORD"]
    if cfg["ADMIN_PASSWORD_FILE"] is None:
        raise click.ClickException(
            "IDP_ADMIN_USERNAME is set but neither IDP_ADMIN_PASSWORD nor "
            "IDP_ADMIN_PASSWORD_FILE: there is no administrator yet, and one needs a password"
        )
    path = Path(cfg["ADMIN_PASSWORD_FILE"])
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise new_account.Invalid("password", f"cannot read {path} ({exc.strerror})") from None
    if len(data) > MAX_FILE:
        raise new_account.Invalid("password", f"{path} is larger than {MAX_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise new_account.Invalid("password", f"{path} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if "\n" in text or "\r" in text:
        raise new_account.Invalid("password", f"{path} has more than one line")
    return text
