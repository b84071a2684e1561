"""`flask --app idp user …`: create, list and disable accounts from the command line."""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import click
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from config import template_problem
from identity import audit
from identity.auth import accounts
from identity.auth.forms import BAD_CHARS, USERNAME_RE
from identity.cli import Group
from identity.extensions import db
from identity.models import User
from identity.passwords import policy_errors

user_cli = Group("user", help="Manage accounts.")


def _read_password() -> str:
    data = sys.stdin.buffer.readline()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException("the password on standard input is not UTF-8") from None
    return text.rstrip("\r\n")


@user_cli.command("create")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option(
    "--password-stdin",
    is_flag=True,
    required=True,
    help="Read the password from the first line of standard input.",
)
@click.option("--admin", is_flag=True, help="Make the account an administrator.")
@click.option("--name", default=None, help="Display name.")
def create(username: str, email: str, password_stdin: bool, admin: bool, name: str | None):
    """Create a local account and print it as JSON."""
    username = username.strip().lower()
    if not 2 <= len(username) <= 64 or not re.match(USERNAME_RE, username):
        raise click.ClickException(
            "--username: use 2 to 64 characters: letters, digits, "
            "'.', '_' and '-', starting with a letter or digit"
        )
    if len(email) > 254 or BAD_CHARS.search(email):
        raise click.ClickException("--email: not a valid e-mail address")
    try:
        email = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise click.ClickException(f"--email: {exc}") from None
    if name is not None and (len(name) > 200 or BAD_CHARS.search(name)):
        raise click.ClickException("--name: at most 200 characters, no control characters")
    password = _read_password()
    if BAD_CHARS.search(password):
        raise click.ClickException("the password contains control characters")
    problems = policy_errors(password, username, email)
    if problems:
        raise click.ClickException("password: " + " ".join(problems))
    if accounts.find(username, by_email=False):
        raise click.ClickException(f"the username {username!r} is taken")
    if accounts.email_taken(email):
        raise click.ClickException(f"an account already uses {email}")
    try:
        user = accounts.create_local(username, email, password, admin=admin, name=name)
    except IntegrityError:
        db.session.rollback()
        raise click.ClickException("the username or e-mail address was taken meanwhile") from None
    click.echo(json.dumps(user.as_dict()))


@user_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_users(as_json: bool):
    """List accounts."""
    users = db.session.scalars(select(User).order_by(User.id)).all()
    if as_json:
        for user in users:
            click.echo(json.dumps(user.as_dict()))
        return
    click.echo(f"{'ID':>5}  {'USERNAME':<24} {'E-MAIL':<32} {'ADMIN':<5} {'STATUS':<8} METHODS")
    for u in users:
        d = u.as_dict()
        click.echo(
            f"{u.id:>5}  {u.username:<24} {u.email or '-':<32} "
            f"{'yes' if u.is_admin else 'no':<5} {'disabled' if u.disabled else 'active':<8} "
            f"{','.join(d['sign_in_methods']) or '-'}"
        )


@user_cli.command("disable")
@click.argument("username")
def disable(username: str):
    """Disable an account and end its sessions."""
    user = accounts.find(username, by_email=False)
    if user is None:
        raise click.ClickException(f"no such user: {username}")
    if user.disabled:
        click.echo(f"{user.username} was already disabled")
        return
    from identity.oidc.logout import end_other_sessions

    user.disabled = True
    user.end_sessions()
    audit.record("admin.user_disabled", user, via="cli")
    db.session.commit()
    notified = end_other_sessions(user, reason="disabled")
    click.echo(
        f"{user.username} is disabled; its sessions are ended, its tokens revoked "
        f"({notified} back-channel logouts sent)"
    )


ldap_cli = Group("ldap", help="The company directory.")


@ldap_cli.command("test")
@click.option("--username", help="Also look this person up and, with --password-stdin, bind.")
@click.option("--password-stdin", is_flag=True, help="Read the user's password from stdin.")
@click.option(
    "--bind-password-stdin",
    is_flag=True,
    help="Read the service account's password from stdin (first line when both).",
)
@click.option("--url", "urls", multiple=True, help="Test this URL instead (repeatable).")
@click.option("--bind-dn", help="Service account DN instead of IDP_LDAP_BIND_DN.")
@click.option("--base", help="User search base instead of IDP_LDAP_USER_BASE.")
@click.option("--filter", "user_filter", help="User filter instead of IDP_LDAP_USER_FILTER.")
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
def ldap_test(
    username, password_stdin, bind_password_stdin, urls, bind_dn, base, user_filter, as_json
):
    """Run the steps of a directory sign-in and show each one's result (exit 0: all passed)."""
    from identity.admin import ldap_tester
    from identity.connectors.ldap import Settings

    cfg = current_app.config
    if not urls and not cfg["LDAP_URL"]:
        raise click.ClickException("IDP_LDAP_URL is not set; pass --url to test a server")
    for url in urls:
        if not url.startswith(("ldap://", "ldaps://")):
            raise click.ClickException(f"--url: {url!r} is not an ldap:// or ldaps:// URL")
    if password_stdin and not username:
        raise click.ClickException("--password-stdin needs --username")
    if user_filter is not None and (problem := template_problem(user_filter, ("username",))):
        raise click.ClickException(f"--filter: {problem}")
    bind_password = _read_password() if bind_password_stdin else None
    password = _read_password() if password_stdin else None
    # A changed URL never receives the stored bind password: it may be someone else's server.
    withheld = bool(urls) and bind_password is None
    settings = Settings.from_config(
        cfg,
        urls=tuple(u.rstrip("/") for u in urls) or None,
        bind_dn=bind_dn,
        bind_password=bind_password if (bind_password or urls) else None,
        user_base=base,
        user_filter=user_filter,
    )
    if withheld:
        settings = dataclasses.replace(settings, bind_password=None)
    steps = ldap_tester.run(settings, username, password, bind_password_withheld=withheld)
    if as_json:
        click.echo(
            json.dumps(
                {"ok": all(s.ok for s in steps), "steps": [s.as_dict() for s in steps]}, indent=2
            )
        )
    else:
        click.echo(ldap_tester.as_text(steps))
    sys.exit(0 if steps and all(s.ok for s in steps) else 1)
