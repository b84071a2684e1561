"""`flask --app idp user …` (everything the admin console does to accounts), `audit list`,
`ldap test` and `ldap sync`, from the command line."""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import click
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy.exc import IntegrityError

from config import template_problem
from identity.admin import accounts as users
from identity.auth import accounts
from identity.auth.forms import BAD_CHARS, USERNAME_RE
from identity.cli import Group
from identity.extensions import db
from identity.models import User
from identity.names import fold
from identity.passwords import policy_errors

user_cli = Group("user", help="Manage accounts.")


def _read_password() -> str:
    data = sys.stdin.buffer.readline()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException("the password on standard input is not UTF-8") from None
    return text.rstrip("\r\n")


def _find(username: str) -> User:
    # PostgreSQL refuses NUL in a string: never ask it about one.
    if len(username) > 254 or BAD_CHARS.search(username):
        raise click.ClickException(f"no such user: {username!r}")
    user = accounts.find(username, by_email=False)
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
    username = fold(username)
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
    password = None
    if password_stdin:
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
        user, sent = users.create(
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
    if text is not None and (len(text) > users.MAX_SEARCH or BAD_CHARS.search(text)):
        raise click.ClickException(
            f"--search: at most {users.MAX_SEARCH} characters, no control characters"
        )
    return text


@user_cli.command("list")
@click.option("--search", "text", help="Only accounts whose username, e-mail or name has this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_users(text: str | None, as_json: bool):
    """List accounts (by id)."""
    query = users.search_query(_search_text(text)).order_by(None).order_by(User.id)
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
    d = users.details(_find(username))
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
    if problem := users.removal_problem(user, "disable"):
        raise click.ClickException(problem)
    notified = users.disable(user, via="cli")
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
    users.enable(user, via="cli")
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
    password = _read_password()
    problems = users.password_problems(user, password)
    if problems:
        raise click.ClickException("password: " + " ".join(problems))
    notified = users.set_password(user, password, via="cli")
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
        sent = users.send_reset_link(user, via="cli")
    except users.Refused as refused:
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
        users.unlink(user, link, via="cli")
    except users.Refused as refused:
        raise click.ClickException(refused.message) from None
    click.echo(f"{user.username} no longer signs in with {link.connector}")


@user_cli.command("reset-mfa")
@click.argument("username")
def reset_mfa(username: str):
    """Remove a person's second factors and recovery codes (they lost them); they are told."""
    user = _find(username)
    try:
        sent = users.reset_mfa(user, via="cli")
    except users.Refused as refused:
        raise click.ClickException(refused.message) from None
    if sent is not None:
        sent.result(timeout=current_app.config["MAIL_TIMEOUT"] + 5)
    click.echo(
        f"{user.username}'s second factor is reset"
        + (f"; {user.email} was told" if user.email else " (no e-mail address to tell)")
    )


@user_cli.command("end-sessions")
@click.argument("username")
def end_sessions(username: str):
    """Sign an account out everywhere and revoke its tokens (apps are told)."""
    user = _find(username)
    notified = users.end_sessions(user, via="cli")
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
    if not admin and (problem := users.removal_problem(user, "demote")):
        raise click.ClickException(problem)
    users.set_admin(user, admin, via="cli")
    click.echo(f"{user.username} is {'now' if admin else 'no longer'} an administrator")


audit_cli = Group("audit", help="The audit log.")


@audit_cli.command("list")
@click.option("--user", help="Events about this account (username or e-mail).")
@click.option("--app", help="Events about this app (client_id).")
@click.option("--type", "type_", help="Events whose type starts with this (e.g. signin.).")
@click.option("--since", help="From this ISO date or time (UTC unless it says), inclusive.")
@click.option("--until", help="Up to this ISO date (the whole day) or time, inclusive.")
@click.option("--limit", default="50", show_default=True, help="At most this many (1-10000).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit_list(user, app, type_, since, until, limit, as_json):
    """The newest events first."""
    from identity.admin import audit_log

    if not re.fullmatch(r"[0-9]{1,5}", limit) or not 1 <= int(limit) <= 10_000:
        raise click.ClickException("--limit: a whole number from 1 to 10000")
    try:
        filters = audit_log.parse_filters(user, app, type_, since, until)
    except audit_log.FilterError as problem:
        raise click.ClickException(f"--{problem.field}: {problem.message}") from None
    events = audit_log.newest(filters, int(limit))
    names = audit_log.usernames(events)
    for event in events:
        d = audit_log.as_dict(event, names)
        if as_json:
            click.echo(json.dumps(d))
        else:
            who = d["user"] or (f"#{d['user_id']}" if d["user_id"] else "-")
            click.echo(
                f"{d['time']}  {d['type']:<28} {who:<20} {d['ip'] or '-':<15} "
                f"{audit_log.compact(d['data'])}"
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
                {
                    "ok": ldap_tester.verdict(steps) == "passed",
                    "verdict": ldap_tester.verdict(steps),
                    "steps": [s.as_dict() for s in steps],
                },
                indent=2,
            )
        )
    else:
        click.echo(ldap_tester.as_text(steps))
    sys.exit(0 if ldap_tester.verdict(steps) == "passed" else 1)


@ldap_cli.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def ldap_sync(as_json: bool):
    """Read the directory entry of every directory-linked account now (for cron): leavers
    (deleted or locked there) are disabled, groups, names and e-mail addresses follow.
    Exits 1 when the directory cannot be asked."""
    from sqlalchemy import select

    from identity.connectors import ConnectorError
    from identity.models import LinkedIdentity
    from identity.oidc import recheck

    if recheck.connector() is None:
        raise click.ClickException("IDP_LDAP_URL is not set: there is no directory to sync with")
    summary = {"checked": 0, "updated": 0, "disabled": 0, "errors": 0}
    failure = None
    ids = db.session.scalars(
        select(User.id)
        .join(LinkedIdentity)
        .where(LinkedIdentity.connector == "ldap", User.disabled.is_(False))
        .order_by(User.id)
    ).all()
    for user_id in ids:
        user = db.session.get(User, user_id)
        try:
            outcome = recheck.check(user, force=True)
        except ConnectorError as exc:
            db.session.rollback()
            summary["errors"] += 1
            failure = f"the directory did not answer for {user.username}: {exc}"
            break  # unreachable: every other account would wait for the same timeout
        summary["checked"] += 1
        if outcome in (recheck.UPDATED, recheck.DISABLED):
            summary[outcome] += 1
    if as_json:
        click.echo(json.dumps({**summary, "ok": failure is None, "error": failure}))
    else:
        click.echo(
            f"checked {summary['checked']}, updated {summary['updated']}, "
            f"disabled {summary['disabled']}, errors {summary['errors']}"
        )
    if failure:
        raise click.ClickException(failure + " (the other accounts were not checked)")
