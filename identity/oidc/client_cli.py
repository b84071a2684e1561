"""`flask --app idp client …`: apps registered, listed, shown, changed and deleted.

Also rotating their secrets; identity.oidc.clients does the work."""

from __future__ import annotations

import json

import click
from sqlalchemy import select

from identity.cli import Group
from identity.extensions import db
from identity.models import Client
from identity.oidc.client_rules import GRANT_TYPES, ClientError
from identity.oidc.clients import UNCHANGED, create, delete, find, rotate_secret, update
from identity.oidc.subjects import SUBJECT_TYPES
from identity.scopes import NAMES as SCOPES

client_cli = Group("client", help="Apps that sign people in with this IdP.")


def _fail(exc: ClientError):
    raise click.ClickException(str(exc)) from None


def _print(client: Client, secret: str | None, as_json: bool) -> None:
    data = client.as_dict()
    if secret:
        data["client_secret"] = secret
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        shown = " ".join(value) if isinstance(value, list) else value
        click.echo(f"{key:<29} {shown if shown not in (None, '') else '-'}")
    if secret:
        click.echo("\nThe client secret is shown only this once: store it now.")


@client_cli.command("create")
@click.option("--name", required=True, help="A unique name for the app.")
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    help="Where the app receives codes; repeatable; matched exactly.",
)
@click.option("--post-logout-redirect-uri", "logout_uris", multiple=True)
@click.option("--backchannel-logout-uri")
@click.option("--public", is_flag=True, help="No secret (browser or mobile app); PKCE only.")
@click.option(
    "--grant-type", "grant_types", multiple=True, help=f"Repeatable: {', '.join(GRANT_TYPES)}."
)
@click.option("--scope", "scopes", multiple=True, help=f"Repeatable: {', '.join(SCOPES)}.")
@click.option("--skip-consent", is_flag=True, help="First-party app: no consent screen.")
@click.option("--id-token-alg", default="RS256", show_default=True, help="RS256, ES256 or EdDSA.")
@click.option(
    "--acr",
    "require_acr",
    help="What sign-in the app requires: mfa (two factors) or phr (a passkey); a weaker "
    "session is asked for the missing step.",
)
@click.option(
    "--subject-type",
    type=click.Choice(SUBJECT_TYPES),
    default="public",
    show_default=True,
    help="pairwise: the app sees a pseudonym per person, not the account's id.",
)
@click.option("--logo-uri", help="https:// URI of the app's logo, shown when people sign in to it.")
@click.option("--json", "as_json", is_flag=True)
def create_command(
    name,
    redirect_uris,
    logout_uris,
    backchannel_logout_uri,
    public,
    grant_types,
    scopes,
    skip_consent,
    id_token_alg,
    require_acr,
    subject_type,
    logo_uri,
    as_json,
):
    """Register an app; prints its client_id and (once) its client_secret."""
    try:
        client, secret = create(
            name,
            list(redirect_uris),
            public=public,
            grant_types=list(grant_types),
            scopes=list(scopes),
            post_logout_redirect_uris=list(logout_uris),
            backchannel_logout_uri=backchannel_logout_uri,
            skip_consent=skip_consent,
            id_token_alg=id_token_alg,
            require_acr=require_acr,
            subject_type=subject_type,
            logo_uri=logo_uri,
        )
    except ClientError as exc:
        _fail(exc)
    _print(client, secret, as_json)


@client_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(as_json):
    """List registered apps."""
    clients = db.session.scalars(select(Client).order_by(Client.id)).all()
    if as_json:
        for c in clients:
            click.echo(json.dumps(c.as_dict()))
        return
    click.echo(f"{'CLIENT ID':<26} {'NAME':<24} {'TYPE':<13} REDIRECT URIS")
    for c in clients:
        click.echo(
            f"{c.client_id:<26} {c.name:<24} "
            f"{'public' if c.public else 'confidential':<13} {' '.join(c.redirect_uris)}"
        )


@client_cli.command("show")
@click.argument("client")
@click.option("--json", "as_json", is_flag=True)
def show_command(client, as_json):
    """Show one app (by client_id or name); never its secret."""
    try:
        _print(find(client), None, as_json)
    except ClientError as exc:
        _fail(exc)


@client_cli.command("delete")
@click.argument("client")
def delete_command(client):
    """Delete an app (by client_id or name): its tokens are revoked, its consents removed."""
    try:
        found = find(client)
    except ClientError as exc:
        _fail(exc)
    name, client_id = found.name, found.client_id
    done = delete(found)
    click.echo(
        f"deleted {name} ({client_id}): {done['revoked_tokens']} tokens revoked, "
        f"{done['removed_consents']} consents removed"
    )


def _replacement(values: tuple[str, ...]) -> list[str] | None:
    """A repeated option's values: not given keeps the stored list; one empty value ('')
    empties it."""
    if not values:
        return None
    return [] if list(values) == [""] else list(values)


@client_cli.command("update")
@click.argument("client")
@click.option("--name", help="A new unique name.")
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    help="Repeatable; the URIs given replace the stored ones (a removed one stops at once).",
)
@click.option(
    "--post-logout-redirect-uri",
    "logout_uris",
    multiple=True,
    help="Repeatable; replaces the stored ones ('' once removes them all).",
)
@click.option("--backchannel-logout-uri", help="Replaces the stored one.")
@click.option("--no-backchannel-logout-uri", "no_backchannel", is_flag=True, help="Remove it.")
@click.option(
    "--scope", "scopes", multiple=True, help=f"Repeatable, replaces: {', '.join(SCOPES)}."
)
@click.option("--skip-consent/--no-skip-consent", default=None, help="First-party app or not.")
@click.option(
    "--acr", "require_acr", help="What sign-in the app requires: none, mfa or phr (a passkey)."
)
@click.option(
    "--subject-type",
    type=click.Choice(SUBJECT_TYPES),
    help="public or pairwise; changing it changes every person's `sub` for this app.",
)
@click.option("--logo-uri", help="https:// URI of the app's logo; replaces the stored one.")
@click.option("--no-logo-uri", "no_logo", is_flag=True, help="Remove the logo.")
@click.option("--json", "as_json", is_flag=True)
def update_command(
    client,
    name,
    redirect_uris,
    logout_uris,
    backchannel_logout_uri,
    no_backchannel,
    scopes,
    skip_consent,
    require_acr,
    subject_type,
    logo_uri,
    no_logo,
    as_json,
):
    """Change an app (by client_id or name); prints it, never its secret."""
    try:
        if no_backchannel and backchannel_logout_uri is not None:
            raise ClientError(
                "--backchannel-logout-uri and --no-backchannel-logout-uri: use one of them"
            )
        if no_logo and logo_uri is not None:
            raise ClientError("--logo-uri and --no-logo-uri: use one of them")
        found = find(client)
        backchannel = (
            None
            if no_backchannel
            else UNCHANGED
            if backchannel_logout_uri is None
            else backchannel_logout_uri
        )
        changes = update(
            found,
            name=name,
            redirect_uris=_replacement(redirect_uris),
            post_logout_redirect_uris=_replacement(logout_uris),
            backchannel_logout_uri=backchannel,
            scopes=_replacement(scopes),
            skip_consent=skip_consent,
            require_acr=UNCHANGED if require_acr is None else require_acr,
            subject_type=subject_type,
            logo_uri=None if no_logo else UNCHANGED if logo_uri is None else logo_uri,
        )
    except ClientError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({**found.as_dict(), "changed": sorted(changes)}, indent=2))
        return
    click.echo(f"changed: {', '.join(sorted(changes))}" if changes else "nothing changed")
    _print(found, None, False)


@client_cli.command("rotate-secret")
@click.argument("client")
@click.option("--json", "as_json", is_flag=True)
def rotate_secret_command(client, as_json):
    """Give an app a new secret (the old one stops working at once); prints it once."""
    try:
        found = find(client)
        secret = rotate_secret(found)
    except ClientError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"client_id": found.client_id, "client_secret": secret}))
    else:
        click.echo(
            f"client_id     {found.client_id}\nclient_secret {secret}\n\n"
            "The new secret is shown only this once: store it now."
        )
