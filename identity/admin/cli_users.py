"""`flask --app idp user …`: what the admin console does to accounts, from the shell."""

from __future__ import annotations

import json

import click
from flask import current_app
from sqlalchemy.exc import IntegrityError

from identity.admin import accounts, new_account
from identity.admin.cli_stdin import read_password
from identity.auth import accounts as local_accounts
from identity.cli import Group
from identity.extensions import db
from identity.forms import BAD_CHARS
from identity.models import User

user_cli = Group("user", help="Manage accounts.")


def _find(username: str) -> User:
    # PostgreSQL refuses NUL in a string: never ask it about one.
    if len(username) > 254 or BAD_CHARS.search(username):
        raise click.ClickException(f"no such user: {username!r}")
    user = local_accounts.find(username, by_email=False)
    if user is None:
        raise click.ClickException(f"no such user: {username}")
    return user


@user_cli.command("create")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input.",
)
@click.option(
    "--send-reset-link",
    is_flag=True,
    help="No password: e-mail the person a link to choose one (instead of --password-stdin).",
)
@click.option("--admin", is_flag=True, help="Make the account an administrator.")
@click.option("--name", default=None, help="Display name.")
def create(
    username: str,
    email: str,
    password_stdin: bool,
    send_reset_link: bool,
    admin: bool,
    name: str | None,
):
    """Create a local account and print it as JSON."""
    if password_stdin == send_reset_link:
        raise click.UsageError("give either --password-stdin or --send-reset-link")
    try:
        username, email = new_account.names(username, email, name)
    except new_account.Invalid as invalid:
        raise click.ClickException(f"--{invalid.field}: {invalid.detail}") from None
    password = None
    if password_stdin:
        password = read_password()
        try:
            new_account.password(password, username, email)
        except new_account.Invalid as invalid:
            raise click.ClickException(f"password: {invalid.detail}") from None
    if local_accounts.find(username, by_email=False):
        raise click.ClickException(f"the username {username!r} is taken")
    if problem := accounts.directory_name_problem(username):
        raise click.ClickException(f"--username {username!r}: {problem}")
    if local_accounts.email_taken(email):
        raise click.ClickException(f"an account already uses {email}")
    try:
        user, sent = accounts.create(
            username, email, name=name, admin=admin, password=password, via="cli"
        )
    except IntegrityError:
        db.session.rollback()
        raise click.ClickException("the username or e-mail address was taken meanwhile") from None
    if sent is not None:
        sent.result(timeout=current_app.config["MAIL_TIMEOUT"] + 5)
    click.echo(json.dumps(user.as_dict()))


def _table(found) -> None:
    click.echo(f"{'ID':>5}  {'USERNAME':<24} {'E-MAIL':<32} {'ADMIN':<5} {'STATUS':<8} METHODS")
    for u in found:
        d = u.as_dict()
        click.echo(
            f"{u.id:>5}  {u.username:<24} {u.email or '-':<32} "
            f"{'yes' if u.is_admin else 'no':<5} {'disabled' if u.disabled else 'active':<8} "
            f"{','.join(d['sign_in_methods']) or '-'}"
        )


def _search_text(text: str | None) -> str | None:
    if text is not None and (len(text) > accounts.MAX_SEARCH or BAD_CHARS.search(text)):
        raise click.ClickException(
            f"--search: at most {accounts.MAX_SEARCH} characters, no control characters"
        )
    return text


@user_cli.command("list")
@click.option("--search", "text", help="Only accounts whose username, e-mail or name has this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_users(text: str | None, as_json: bool):
    """List accounts (by id)."""
    query = accounts.search_query(_search_text(text)).order_by(None).order_by(User.id)
    found = db.session.scalars(query).all()
    if as_json:
        for user in found:
            click.echo(json.dumps(user.as_dict()))
        return
    _table(found)


@user_cli.command("search")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def search_users(ctx: click.Context, text: str, as_json: bool):
    """Accounts whose username, e-mail address or name contains TEXT (any case)."""
    if not text.strip():
        raise click.ClickException("TEXT: give something to look for")
    ctx.invoke(list_users, text=text, as_json=as_json)


@user_cli.command("show")
@click.argument("username")
@click.option("--json", "as_json", is_flag=True, help="Print the account as JSON.")
def show(username: str, as_json: bool):
    """Show one account: status, roles, sign-in methods, last sign-in."""
    d = accounts.details(_find(username))
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    rows = [
        ("id", d["id"]),
        ("username", d["username"]),
        ("e-mail", f"{d['email'] or '-'}{' (verified)' if d['email_verified'] else ''}"),
        ("name", d["name"] or "-"),
        ("status", "disabled" if d["disabled"] else "active"),
        ("admin", "yes" if d["admin"] else ("via directory group" if d["administrator"] else "no")),
        ("groups", ", ".join(d["groups"]) or "-"),
        ("created", d["created_at"]),
        ("last sign-in", d["last_login_at"] or "never"),
        ("password set", d["password_changed_at"] or ("yes" if d["has_password"] else "no")),
    ]
    for key, value in rows:
        click.echo(f"{key + ':':<14}{value}")
    click.echo("sign-in methods:")
    for link in d["links"] or []:
        click.echo(
            f"  {link['connector']:<10} {link['label']:<20} "
            f"last used {link['last_used_at'] or 'never'}"
        )
    if not d["links"]:
        click.echo("  none")


@user_cli.command("edit")
@click.argument("username")
@click.option("--username", "new_username", help="A new username.")
@click.option("--email", help="A new e-mail address (unverified until its link is opened).")
@click.option("--name", help="A new name.")
def edit(username: str, new_username: str | None, email: str | None, name: str | None):
    """Change an account's username, e-mail address or name (as the admin page does)."""
    from werkzeug.datastructures import MultiDict

    from identity.admin import user_names

    user = _find(username)
    locked = user_names.directory_fields(user)
    asked = {"email": email, "name": name}
    for field in sorted(locked):
        if asked[field] is not None:
            raise click.ClickException(f"--{field}: {user_names.FROM_DIRECTORY}")
    data = MultiDict(
        {
            "username": user.username if new_username is None else new_username,
            "email": (user.email or "") if email is None else email,
            "name": (user.name or "") if name is None else name,
        }
    )
    form = user_names.NamesForm(user, formdata=data, meta={"csrf": False})
    if not form.validate():
        field, errors = next(iter(form.errors.items()))
        raise click.ClickException(f"--{field}: {errors[0]}")
    try:
        changed = user_names.edit(
            user, form.username.data, form.email.data, form.name.data, via="cli"
        )
    except IntegrityError:
        raise click.ClickException("the username or e-mail address was taken meanwhile") from None
    said = f"{user.username}: {', '.join(changed) or 'nothing'} changed"
    if "email" in changed and user.email:
        said += f"; {user.email} is not verified"
        # The link's path comes from url_for, which needs a request; its host is always
        # IDP_ISSUER's (identity.auth.verification), so an empty one will do.
        with current_app.test_request_context():
            sent = user_names.send_verification(user)
        if sent:
            said += ": a link to verify it was sent there"
    click.echo(said)


@user_cli.command("disable")
@click.argument("username")
def disable(username: str):
    """Disable an account and end its sessions."""
    user = _find(username)
    if user.disabled:
        click.echo(f"{user.username} was already disabled")
        return
    if problem := accounts.removal_problem(user, "disable"):
        raise click.ClickException(problem)
    notified = accounts.disable(user, via="cli")
    click.echo(
        f"{user.username} is disabled; its sessions are ended, its tokens revoked "
        f"({notified} back-channel logouts sent)"
    )


@user_cli.command("enable")
@click.argument("username")
def enable(username: str):
    """Let a disabled account sign in again."""
    user = _find(username)
    if not user.disabled:
        click.echo(f"{user.username} was already active")
        return
    accounts.enable(user, via="cli")
    click.echo(f"{user.username} is enabled")


@user_cli.command("set-password")
@click.argument("username")
@click.option(
    "--password-stdin",
    is_flag=True,
    required=True,
    help="Read the new password from the first line of standard input.",
)
def set_password(username: str, password_stdin: bool):
    """Set a new password (policy-checked); every session ends and tokens are revoked."""
    user = _find(username)
    password = read_password()
    problems = accounts.password_problems(user, password)
    if problems:
        raise click.ClickException("password: " + " ".join(problems))
    notified = accounts.set_password(user, password, via="cli")
    click.echo(
        f"{user.username}'s password is set; its sessions are ended, its tokens revoked "
        f"({notified} back-channel logouts sent)"
    )


@user_cli.command("send-reset-link")
@click.argument("username")
def send_reset_link(username: str):
    """E-mail the person a single-use link to choose a new password."""
    user = _find(username)
    try:
        sent = accounts.send_reset_link(user, via="cli")
    except accounts.Refused as refused:
        raise click.ClickException(refused.message) from None
    sent.result(timeout=current_app.config["MAIL_TIMEOUT"] + 5)
    click.echo(f"a link to choose a new password was sent to {user.email}")


@user_cli.command("unlink")
@click.argument("username")
@click.argument("connector")
def unlink(username: str, connector: str):
    """Remove a way to sign in (local, ldap, google, …); an active account keeps one."""
    user = _find(username)
    link = next((link for link in user.links if link.connector == connector.lower()), None)
    if link is None:
        have = ", ".join(link.connector for link in user.links) or "none"
        raise click.ClickException(
            f"{user.username} has no {connector!r} sign-in method (it has: {have})"
        )
    try:
        accounts.unlink(user, link, via="cli")
    except accounts.Refused as refused:
        raise click.ClickException(refused.message) from None
    click.echo(f"{user.username} no longer signs in with {link.connector}")


@user_cli.command("reset-mfa")
@click.argument("username")
def reset_mfa(username: str):
    """Remove a person's second factors and recovery codes (they lost them) and sign them out
    everywhere; they are told."""
    user = _find(username)
    try:
        sent = accounts.reset_mfa(user, via="cli")
    except accounts.Refused as refused:
        raise click.ClickException(refused.message) from None
    if sent is not None:
        sent.result(timeout=current_app.config["MAIL_TIMEOUT"] + 5)
    click.echo(
        f"{user.username}'s second factor is reset and they are signed out everywhere"
        + (f"; {user.email} was told" if user.email else " (no e-mail address to tell)")
    )


@user_cli.command("end-sessions")
@click.argument("username")
def end_sessions(username: str):
    """Sign an account out everywhere and revoke its tokens (apps are told)."""
    user = _find(username)
    notified = accounts.end_sessions(user, via="cli")
    click.echo(
        f"{user.username}'s sessions are ended, its tokens revoked "
        f"({notified} back-channel logouts sent)"
    )


@user_cli.command("set-admin")
@click.argument("username")
@click.option("--admin/--no-admin", default=True, help="Grant (default) or remove the role.")
def set_admin(username: str, admin: bool):
    """Make an account an administrator, or with --no-admin no longer one."""
    user = _find(username)
    if user.is_admin == admin:
        click.echo(f"{user.username} {'was already' if admin else 'was not'} an administrator")
        return
    if not admin and (problem := accounts.removal_problem(user, "demote")):
        raise click.ClickException(problem)
    accounts.set_admin(user, admin, via="cli")
    click.echo(f"{user.username} is {'now' if admin else 'no longer'} an administrator")
