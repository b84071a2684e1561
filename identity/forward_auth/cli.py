"""`flask --app idp forward-auth`: list, add and remove the access rules of forward
authentication."""

from __future__ import annotations

import json
import re

import click

from identity.cli import Group

forward_auth_cli = Group("forward-auth", help="Forward authentication: who may reach which site.")


@forward_auth_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def rule_list(as_json):
    """Every rule, by host and path. A host without a rule is refused."""
    from identity.forward_auth import rules

    found = [rules.describe(r) for r in rules.listed()]
    for d in found:
        if as_json:
            click.echo(json.dumps({k: d[k] for k in ("id", "host", "path", "groups", "acr")}))
        else:
            click.echo(f"#{d['id']:<4} {d['host']}{d['path']:<20}  {d['who']}; {d['strength']}")
    if not found and not as_json:
        click.echo("no rules: every site is refused")


@forward_auth_cli.command("add")
@click.argument("host")
@click.option("--path", default="/", show_default=True, help="Only under this path prefix.")
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Only members of this group (repeat for several); none: anyone signed in.",
)
@click.option(
    "--acr",
    default="any",
    show_default=True,
    help="Strength needed: any, mfa (a second factor) or phr (a passkey).",
)
def rule_add(host, path, groups, acr):
    """Let people reach HOST (a host name under IDP_FORWARD_AUTH_COOKIE_DOMAIN)."""
    from identity import audit
    from identity.extensions import db
    from identity.forward_auth import rules

    try:
        rule = rules.add(rules.check(host, path, list(groups), acr))
    except rules.RuleError as problem:
        raise click.ClickException(f"{_option(problem.field)}: {problem.message}") from None
    d = rules.describe(rule)
    audit.record("forward_auth.rule_added", None, by="cli", **_facts(d))
    db.session.commit()
    click.echo(f"rule #{d['id']}: {d['host']}{d['path']}: {d['who']}; {d['strength']}")


@forward_auth_cli.command("remove")
@click.argument("rule_id")
def rule_remove(rule_id):
    """Remove rule RULE_ID (see `list`); what it let through is refused, or falls to a
    shorter prefix of the same host."""
    from identity import audit
    from identity.extensions import db
    from identity.forward_auth import rules
    from identity.models import ForwardAuthRule

    rule = None
    if re.fullmatch(r"#?[0-9]{1,9}", rule_id):
        rule = db.session.get(ForwardAuthRule, int(rule_id.lstrip("#")))
    if rule is None:
        raise click.ClickException(f"no rule {rule_id!r}; `forward-auth list` shows them")
    d = rules.describe(rule)
    db.session.delete(rule)
    audit.record("forward_auth.rule_removed", None, by="cli", **_facts(d))
    db.session.commit()
    click.echo(f"removed rule #{d['id']} ({d['host']}{d['path']})")


def _option(field: str) -> str:
    return {"host": "HOST", "path": "--path", "groups": "--group", "acr": "--acr"}[field]


def _facts(d: dict) -> dict:
    return {
        "rule": d["id"],
        "host": d["host"],
        "path": d["path"],
        "groups": d["groups"],
        "acr": d["acr"],
    }
