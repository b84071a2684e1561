"""`flask --app idp upstream list|check`: the upstream OpenID providers, and a live check of
one's discovery document and keys."""

from __future__ import annotations

import json

import click
from flask import current_app

from identity.cli import Group

upstream_cli = Group(
    "upstream", help="Upstream OpenID Connect providers (IDP_OIDC_UPSTREAMS and the console's)."
)


def _connectors() -> list:
    from identity.connectors.upstream_registry import upstream_connectors

    return upstream_connectors()


@upstream_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def upstream_list(as_json):
    """The enabled upstreams, set or stored: id, label, issuer, client id (never the secret)."""
    connectors = _connectors()
    if not connectors and not as_json:
        click.echo(
            "No upstream OpenID provider is configured (IDP_OIDC_UPSTREAMS, or "
            "Administration → Sign-in providers)."
        )
    for c in connectors:
        up = c.upstream
        row = {"id": up.id, "label": up.label, "issuer": up.issuer, "client_id": up.client_id}
        click.echo(json.dumps(row) if as_json else f"{up.id:<16} {up.label:<24} {up.issuer}")


@upstream_cli.command("check")
@click.argument("upstream_id")
@click.option("--json", "as_json", is_flag=True, help="The findings as one JSON object.")
def upstream_check(upstream_id, as_json):
    """Read UPSTREAM_ID's discovery document and keys now, and say what to register there."""
    from identity.connectors.base import RedirectFailure

    connector = next((c for c in _connectors() if c.upstream.id == upstream_id), None)
    if connector is None:
        known = ", ".join(c.upstream.id for c in _connectors()) or "none"
        raise click.ClickException(f"no upstream {upstream_id!r} (configured: {known})")
    with current_app.test_request_context():
        try:
            found = connector.check()
        except RedirectFailure as failed:
            detail = f" ({failed.detail})" if failed.detail else ""
            raise click.ClickException(f"{upstream_id}: {failed.reason}{detail}") from None
    if as_json:
        click.echo(json.dumps({"id": upstream_id, **found}))
        return
    click.echo(f"{upstream_id}: discovery and keys OK")
    for key, value in found.items():
        shown = ", ".join(value) if isinstance(value, list) else (value or "-")
        click.echo(f"  {key.replace('_', ' ')}: {shown}")
