"""Registering, changing and removing apps.

The admin pages and `flask client` both call these, validated by identity.oidc.client_rules
and recorded in the audit log."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import delete as sa_delete
from sqlalchemy import select

from identity import audit
from identity.extensions import db
from identity.models import AuthorizationCode, Client, Consent, Token
from identity.models.oauth import secret_digest
from identity.oidc.client_rules import (
    ClientError,
    check_acr,
    check_backchannel_uri,
    check_grants,
    check_id_token_alg,
    check_logo_uri,
    check_name,
    check_scopes,
    check_subject_type,
    check_uris,
)
from identity.oidc.subjects import sector
from identity.oidc.tokens import revoke_tokens
from identity.scopes import DEFAULTS as DEFAULT_SCOPES


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
    logo_uri: str | None = None,
    by: str | None = None,
) -> tuple[Client, str | None]:
    """Register an app; return it and its secret (None for a public app). Nothing is stored
    when anything is wrong (ClientError says what)."""
    name = check_name(name)
    grants = check_grants(grant_types, public)
    uris = check_uris(redirect_uris, "--redirect-uri")
    if "authorization_code" in grants and not uris:
        raise ClientError("at least one is needed for authorization_code", "--redirect-uri")
    scope_list = check_scopes(scopes or DEFAULT_SCOPES)
    logout_uris = check_uris(post_logout_redirect_uris, "--post-logout-redirect-uri")
    backchannel = check_backchannel_uri(backchannel_logout_uri) if backchannel_logout_uri else None
    id_token_alg = check_id_token_alg(id_token_alg)
    require_acr = check_acr(require_acr)
    subject_type = check_subject_type(subject_type, uris)
    logo_uri = check_logo_uri(logo_uri)
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
            "logo_uri": logo_uri,
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
    old one stops working at once in this process, and in the others within
    IDP_CLIENT_CACHE_SECONDS (identity.oidc.client_cache). Tokens already issued stay valid
    until they expire."""
    if client.public:
        raise ClientError(f"{client.name} is a public app: it has no secret")
    secret = secrets.token_urlsafe(32)
    client.client_secret = secret_digest(secret)
    audit.record("client.secret_rotated", None, client_id=client.client_id, **_by(by))
    db.session.commit()
    return secret


UNCHANGED = object()


def update(
    client: Client,
    *,
    name: str | None = None,
    redirect_uris: list[str] | None = None,
    post_logout_redirect_uris: list[str] | None = None,
    backchannel_logout_uri: str | None | object = UNCHANGED,
    scopes: list[str] | None = None,
    skip_consent: bool | None = None,
    require_acr: str | None | object = UNCHANGED,
    subject_type: str | None = None,
    logo_uri: str | None | object = UNCHANGED,
    by: str | None = None,
) -> dict[str, dict]:
    """Change what is given (None: keep; a list replaces the stored one; backchannel
    None removes it), validated as at registration. Returns {field: {"old", "new"}} for what
    actually changed; nothing is stored when anything is wrong (ClientError says what).

    A change (a removed redirect URI, say) takes effect at once in this process, and in the
    others within IDP_CLIENT_CACHE_SECONDS (identity.oidc.client_cache)."""
    meta = client.as_dict()
    wanted: dict[str, object] = {}
    if name is not None:
        stripped = name.strip()
        wanted["name"] = stripped if stripped == client.name else check_name(stripped)
    if redirect_uris is not None:
        uris = check_uris(redirect_uris, "--redirect-uri")
        if "authorization_code" in meta["grant_types"] and not uris:
            raise ClientError("at least one is needed for authorization_code", "--redirect-uri")
        wanted["redirect_uris"] = uris
    if post_logout_redirect_uris is not None:
        wanted["post_logout_redirect_uris"] = check_uris(
            post_logout_redirect_uris, "--post-logout-redirect-uri"
        )
    if backchannel_logout_uri is not UNCHANGED:
        wanted["backchannel_logout_uri"] = (
            check_backchannel_uri(backchannel_logout_uri) if backchannel_logout_uri else None
        )
    if scopes is not None:
        if not scopes:
            raise ClientError("at least one is needed", "--scope")
        wanted["scope"] = " ".join(check_scopes(scopes))
    if skip_consent is not None:
        wanted["skip_consent"] = bool(skip_consent)
    if require_acr is not UNCHANGED:
        wanted["require_acr"] = check_acr(require_acr)
    if logo_uri is not UNCHANGED:
        wanted["logo_uri"] = check_logo_uri(logo_uri)  # type: ignore[arg-type]
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
                f"this app has pairwise subjects for {sector(meta['redirect_uris'])}: another "
                "host would change every person's `sub`; register a new app for the new host",
                "--redirect-uri",
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
    """Remove an app: its tokens are revoked (refused at once by userinfo and introspection;
    its own tokens, never stored, once no worker knows the app: IDP_CLIENT_CACHE_SECONDS; an
    API that checks a JWT access token offline accepts it until it expires), its consents
    and pending codes removed, then the registration itself."""
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
