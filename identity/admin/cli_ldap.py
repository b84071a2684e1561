"""`flask --app idp ldap test` and `ldap sync`: the company directory, from the shell."""

from __future__ import annotations

import dataclasses
import json
import sys

import click
from flask import current_app

from identity.admin.cli_stdin import read_password
from identity.cli import Group
from identity.extensions import db
from identity.models import User
from identity.settings.ldap import template_problem

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
    bind_password = read_password() if bind_password_stdin else None
    password = read_password() if password_stdin else None
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
@click.option(
    "--max-disable",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Change nothing when more accounts than this would be disabled: a wrong setting or "
    "a partly restored directory looks like everybody leaving at once.",
)
def ldap_sync(as_json: bool, max_disable: int):
    """Read the directory entry of every directory-linked account now (for cron): leavers
    (deleted or locked there by an administrator) are disabled, groups, names and e-mail
    addresses follow; an entry locked for a while by failed binds is counted, not changed.

    Every entry is read before anything changes: when the directory cannot be asked, or more
    than --max-disable accounts would be disabled, nothing is changed and it exits 1."""
    from sqlalchemy import select

    from identity.connectors import ConnectorError, LockedOut
    from identity.models import LinkedIdentity
    from identity.oidc import recheck

    ldap = recheck.connector()
    if ldap is None:
        raise click.ClickException("IDP_LDAP_URL is not set: there is no directory to sync with")
    summary = {"checked": 0, "updated": 0, "disabled": 0, "locked_out": 0, "errors": 0}
    failure = None
    ids = db.session.scalars(
        select(User.id)
        .join(LinkedIdentity)
        .where(LinkedIdentity.connector == "ldap", User.disabled.is_(False))
        .order_by(User.id)
    ).all()
    readings = []
    for user_id in ids:
        user = db.session.get(User, user_id)
        try:
            readings.append((user_id, ldap.lookup(recheck.directory_link(user).subject)))
        except ConnectorError as exc:
            summary["errors"] += 1
            failure = f"the directory did not answer for {user.username}: {exc}"
            break  # unreachable: every other account would wait for the same timeout
    leavers = sum(found.state in ("gone", "locked") for _, found in readings)
    if failure is None and leavers > max_disable:
        failure = (
            f"{leavers} accounts would be disabled, more than --max-disable {max_disable}. "
            "Check the directory settings (IDP_LDAP_USER_BASE, IDP_LDAP_ID_ATTRIBUTE) and the "
            f"directory itself; if they really all left, run again with --max-disable {leavers}"
        )
    for user_id, found in readings if failure is None else ():
        user = db.session.get(User, user_id)
        summary["checked"] += 1
        try:
            outcome = recheck.check(user, force=True, found=found)
        except LockedOut:
            # Locked by failed binds, for a while: not a leaver, nothing to change.
            summary["locked_out"] += 1
            continue
        if outcome in (recheck.UPDATED, recheck.DISABLED):
            summary[outcome] += 1
    if as_json:
        click.echo(json.dumps({**summary, "ok": failure is None, "error": failure}))
    else:
        click.echo(
            f"checked {summary['checked']}, updated {summary['updated']}, "
            f"disabled {summary['disabled']}, locked out {summary['locked_out']}, "
            f"errors {summary['errors']}"
        )
    if failure:
        raise click.ClickException(failure + " (nothing was changed)")
