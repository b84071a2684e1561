"""`flask --app idp audit list`: the audit log, from the shell."""

from __future__ import annotations

import json
import re

import click

from identity.cli import Group

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
