"""Registering apps: validation (exact redirect URIs, https but on loopback) and
`flask --app idp client …`."""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import time
from urllib.parse import urlsplit

import click
from flask import current_app
from sqlalchemy import delete as sa_delete
from sqlalchemy import select

from identity import acr, audit
from identity.cli import Group
from identity.extensions import db
from identity.models import Client
from identity.models.oauth import secret_digest
from identity.oidc.subjects import SUBJECT_TYPES, sector

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
SCOPES = ("openid", "profile", "email", "groups", "offline_access")
DEFAULT_GRANTS = ("authorization_code", "refresh_token")
DEFAULT_SCOPES = ("openid", "profile", "email")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
LOOPBACK_NAMES = {"localhost"}


class ClientError(ValueError):
    """A registration that cannot be accepted; the message names the field."""


def check_uri(uri: str, field: str) -> str:
    """An absolute https URI (http only on loopback), without fragment, user info or
    wildcards: redirect URIs are compared exactly, character for character."""
    if not uri or len(uri) > 2000 or _CONTROL.search(uri) or " " in uri:
        raise ClientError(
            f"{field}: {uri!r} is empty, too long or contains spaces or control characters"
        )
    parts = urlsplit(uri)
    if "*" in uri:
        raise ClientError(f"{field}: {uri!r}: wildcards are not allowed; register each URI")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ClientError(f"{field}: {uri!r} must be an absolute https:// URI")
    if parts.fragment or "#" in uri:
        raise ClientError(f"{field}: {uri!r} must not contain a fragment (#…)")
    if parts.username or parts.password:
        raise ClientError(f"{field}: {uri!r} must not contain a user name or password")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ClientError(
            f"{field}: {uri!r}: http:// is allowed on loopback only (127.0.0.1, "
            "[::1], localhost); use https://"
        )
    return uri


def check_backchannel_uri(uri: str) -> str:
    """A back-channel logout URI: a valid URI (check_uri) that, in production, does not name
    this machine, a link-local address or a cloud metadata service."""
    from identity.oidc import destinations

    uri = check_uri(uri, "--backchannel-logout-uri")
    try:
        destinations.check_host(urlsplit(uri).hostname)
    except destinations.ForbiddenDestination as exc:
        raise ClientError(
            f"--backchannel-logout-uri: {uri!r}: {exc}; logout tokens are not sent there"
        ) from None
    return uri


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 100 or _CONTROL.search(name):
        raise ClientError("--name: 1 to 100 characters, no control characters")
    if db.session.scalar(select(Client.id).where(Client.name == name)) is not None:
        raise ClientError(f"--name: an app named {name!r} exists already")
    return name


def check_uris(uris: list[str] | None, field: str) -> list[str]:
    """Each URI checked, duplicates dropped, order kept."""
    return [check_uri(u, field) for u in dict.fromkeys(uris or [])]


def check_scopes(scopes: list[str]) -> list[str]:
    scope_list = list(dict.fromkeys(scopes))
    bad_scopes = [s for s in scope_list if s not in SCOPES]
    if bad_scopes:
        raise ClientError(
            f"--scope: {', '.join(bad_scopes)} not supported; use {', '.join(SCOPES)}"
        )
    return scope_list


def check_subject_type(value: str, redirect_uris: list[str]) -> str:
    """`public` or `pairwise` (OpenID Connect Core 8); pairwise needs every redirect URI on
    one host, the sector within which a person has one pseudonym."""
    if value not in SUBJECT_TYPES:
        raise ClientError(f"--subject-type: {value!r} is not one of {', '.join(SUBJECT_TYPES)}")
    if value == "pairwise" and sector(redirect_uris) is None:
        hosts = sorted({urlsplit(u).hostname or "" for u in redirect_uris})
        raise ClientError(
            "--subject-type pairwise: every redirect URI must be on one host (the sector "
            "whose people get one pseudonym each); "
            + (f"these are on {', '.join(hosts)}" if hosts else "this app has none")
        )
    return value


def check_acr(value: str | None) -> str | None:
    """What an app may require of a sign-in: "mfa" (two factors), "phr" (a passkey), or
    None/"none" (what the person has)."""
    if value in (None, "", "none"):
        return None
    if value not in acr.REQUIRABLE:
        raise ClientError(f"--acr: {value!r} is not one of none, {', '.join(acr.REQUIRABLE)}")
    return value


def create(
    name: str,
    redirect_uris: list[str],
    *,
    public: bool = False,
    grant_types: list[str] | None = None,
    scopes: list[str] | None = None,
    post_logout_redirect_uris: list[str] | None = None,
    backchannel_logout_uri: str | None = None,
    skip_consent: bool = False,
    id_token_alg: str = "RS256",  # noqa: S107 (an algorithm name, not a secret)
    require_acr: str | None = None,
    subject_type: str = "public",
    by: str | None = None,
) -> tuple[Client, str | None]:
    """Register an app; return it and its secret (None for a public app). Nothing is stored
    when anything is wrong (ClientError says what)."""
    name = check_name(name)
    grants = list(dict.fromkeys(grant_types or DEFAULT_GRANTS))
    unknown = [g for g in grants if g not in GRANT_TYPES]
    if unknown:
        raise ClientError(
            f"--grant-type: {', '.join(unknown)} not supported; use {', '.join(GRANT_TYPES)}"
        )
    if public and "client_credentials" in grants:
        raise ClientError(
            "--grant-type client_credentials needs a confidential app "
            "(without --public): a public app cannot keep a secret"
        )
    if "refresh_token" in grants and "authorization_code" not in grants:
        raise ClientError("--grant-type refresh_token goes with authorization_code")
    uris = check_uris(redirect_uris, "--redirect-uri")
    if "authorization_code" in grants and not uris:
        raise ClientError("--redirect-uri: at least one is needed for authorization_code")
    scope_list = check_scopes(scopes or DEFAULT_SCOPES)
    logout_uris = check_uris(post_logout_redirect_uris, "--post-logout-redirect-uri")
    backchannel = check_backchannel_uri(backchannel_logout_uri) if backchannel_logout_uri else None

    if id_token_alg not in current_app.config["SIGNING_ALGORITHMS"]:
        raise ClientError(
            f"--id-token-alg: {id_token_alg!r} is not one of IDP_SIGNING_ALGORITHMS "
            f"({', '.join(current_app.config['SIGNING_ALGORITHMS'])})"
        )

    require_acr = check_acr(require_acr)
    subject_type = check_subject_type(subject_type, uris)
    secret = None if public else secrets.token_urlsafe(32)
    client = Client(
        name=name,
        skip_consent=skip_consent,
        client_id=new_client_id(),
        client_id_issued_at=int(time.time()),
        client_secret=secret_digest(secret) if secret else None,
    )
    client.set_client_metadata(
        {
            "client_name": name,
            "redirect_uris": uris,
            "post_logout_redirect_uris": logout_uris,
            "backchannel_logout_uri": backchannel,
            "grant_types": grants,
            "response_types": ["code"] if "authorization_code" in grants else [],
            "scope": " ".join(scope_list),
            "token_endpoint_auth_method": "none" if public else "client_secret_basic",
            "id_token_signed_response_alg": id_token_alg,
            "require_acr": require_acr,
            "subject_type": subject_type,
        }
    )
    db.session.add(client)
    db.session.flush()
    audit.record("client.created", None, client_id=client.client_id, name=name, **_by(by))
    db.session.commit()
    return client, secret


def new_client_id() -> str:
    """24 random URL-safe characters (144 bits) that never start with "-": such an id read
    as an option on the command line (`flask client show -x...` failed one time in 64)."""
    client_id = secrets.token_urlsafe(18)
    while client_id.startswith("-"):
        client_id = secrets.token_urlsafe(18)
    return client_id


def find(client_id_or_name: str) -> Client:
    client = db.session.scalar(
        select(Client).where(
            (Client.client_id == client_id_or_name) | (Client.name == client_id_or_name)
        )
    )
    if client is None:
        raise ClientError(f"no such app: {client_id_or_name}")
    return client


def rotate_secret(client: Client, *, by: str | None = None) -> str:
    """A new secret for a confidential app (returned once; only its digest is stored): the
    old one stops working at once. Tokens already issued stay valid until they expire."""
    if client.public:
        raise ClientError(f"{client.name} is a public app: it has no secret")
    secret = secrets.token_urlsafe(32)
    client.client_secret = secret_digest(secret)
    audit.record("client.secret_rotated", None, client_id=client.client_id, **_by(by))
    db.session.commit()
    return secret


_UNCHANGED = object()


def update(
    client: Client,
    *,
    name: str | None = None,
    redirect_uris: list[str] | None = None,
    post_logout_redirect_uris: list[str] | None = None,
    backchannel_logout_uri: str | None | object = _UNCHANGED,
    scopes: list[str] | None = None,
    skip_consent: bool | None = None,
    require_acr: str | None | object = _UNCHANGED,
    subject_type: str | None = None,
    by: str | None = None,
) -> dict[str, dict]:
    """Change what is given (None: keep; a list replaces the stored one; backchannel
    None removes it), validated as at registration. Returns {field: {"old", "new"}} for what
    actually changed; nothing is stored when anything is wrong (ClientError says what).

    Redirect URIs are read from the database on every request: a removed one stops working
    at once."""
    meta = client.as_dict()
    wanted: dict[str, object] = {}
    if name is not None:
        stripped = name.strip()
        wanted["name"] = stripped if stripped == client.name else check_name(stripped)
    if redirect_uris is not None:
        uris = check_uris(redirect_uris, "--redirect-uri")
        if "authorization_code" in meta["grant_types"] and not uris:
            raise ClientError("--redirect-uri: at least one is needed for authorization_code")
        wanted["redirect_uris"] = uris
    if post_logout_redirect_uris is not None:
        wanted["post_logout_redirect_uris"] = check_uris(
            post_logout_redirect_uris, "--post-logout-redirect-uri"
        )
    if backchannel_logout_uri is not _UNCHANGED:
        wanted["backchannel_logout_uri"] = (
            check_backchannel_uri(backchannel_logout_uri) if backchannel_logout_uri else None
        )
    if scopes is not None:
        if not scopes:
            raise ClientError("--scope: at least one is needed")
        wanted["scope"] = " ".join(check_scopes(scopes))
    if skip_consent is not None:
        wanted["skip_consent"] = bool(skip_consent)
    if require_acr is not _UNCHANGED:
        wanted["require_acr"] = check_acr(require_acr)
    if subject_type is not None or redirect_uris is not None:
        kind = check_subject_type(
            subject_type or meta["subject_type"], wanted.get("redirect_uris", meta["redirect_uris"])
        )
        if (
            kind == meta["subject_type"] == "pairwise"
            and "redirect_uris" in wanted
            and sector(wanted["redirect_uris"]) != sector(meta["redirect_uris"])
        ):
            raise ClientError(
                "--redirect-uri: this app has pairwise subjects for "
                f"{sector(meta['redirect_uris'])}: another host would change every person's "
                "`sub`; register a new app for the new host"
            )
        wanted["subject_type"] = kind

    changes = {k: {"old": meta[k], "new": v} for k, v in wanted.items() if meta[k] != v}
    if not changes:
        return {}
    stored = dict(client.client_metadata)
    for key, change in changes.items():
        if key == "name":
            client.name = stored["client_name"] = change["new"]
        elif key == "skip_consent":
            client.skip_consent = change["new"]
        else:
            stored[key] = change["new"]
    client.set_client_metadata(stored)
    audit.record("client.updated", None, client_id=client.client_id, changes=changes, **_by(by))
    db.session.commit()
    return changes


def delete(client: Client, *, by: str | None = None) -> dict[str, int]:
    """Remove an app: its tokens are revoked (an access token it holds stops working at
    once), its consents and pending codes removed, then the registration itself."""
    from identity.models import AuthorizationCode, Consent, Token
    from identity.oidc.server import revoke_tokens

    client_id = client.client_id
    revoked = revoke_tokens(Token.client_id == client_id)
    consents = db.session.execute(sa_delete(Consent).where(Consent.client_id == client_id)).rowcount
    db.session.execute(sa_delete(AuthorizationCode).where(AuthorizationCode.client_id == client_id))
    audit.record(
        "client.deleted",
        None,
        client_id=client_id,
        name=client.name,
        revoked_tokens=revoked,
        removed_consents=consents,
        **_by(by),
    )
    db.session.delete(client)
    db.session.commit()
    return {"revoked_tokens": revoked, "removed_consents": consents}


def _by(by: str | None) -> dict:
    """Who did it, when a person at the admin pages did (the command line says nothing)."""
    return {"by": by} if by else {}


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
    as_json,
):
    """Change an app (by client_id or name); prints it, never its secret."""
    try:
        if no_backchannel and backchannel_logout_uri is not None:
            raise ClientError(
                "--backchannel-logout-uri and --no-backchannel-logout-uri: use one of them"
            )
        found = find(client)
        backchannel = (
            None
            if no_backchannel
            else _UNCHANGED
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
            require_acr=_UNCHANGED if require_acr is None else require_acr,
            subject_type=subject_type,
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
