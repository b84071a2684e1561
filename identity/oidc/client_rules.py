"""What an app may be registered with, and ClientError naming the setting that is wrong.

Grant types, scopes, how it authenticates, exact redirect URIs (https but on loopback)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import select

from identity import acr
from identity.extensions import db
from identity.models import Client
from identity.oidc.subjects import SUBJECT_TYPES, sector
from identity.scopes import NAMES as SCOPES

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
DEFAULT_GRANTS = ("authorization_code", "refresh_token")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
LOOPBACK_NAMES = {"localhost"}
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
CONFIDENTIAL_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class ClientError(ValueError):
    """A registration that cannot be accepted: `option` names the setting that is wrong as the
    command line spells it (None when no single one is), `detail` says what is wrong; the
    message is the two together, so that a form can put `detail` on its own field."""

    def __init__(self, detail: str, option: str | None = None, *, joined_by: str = ": "):
        super().__init__(f"{option}{joined_by}{detail}" if option else detail)
        self.option = option
        self.detail = detail


def check_uri(uri: str, field: str) -> str:
    """An absolute https URI (http only on loopback), without fragment, user info or
    wildcards: redirect URIs are compared exactly, character for character."""
    if not uri or len(uri) > 2000 or _CONTROL.search(uri) or " " in uri:
        raise ClientError(
            f"{uri!r} is empty, too long or contains spaces or control characters", field
        )
    parts = urlsplit(uri)
    if "*" in uri:
        raise ClientError(f"{uri!r}: wildcards are not allowed; register each URI", field)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ClientError(f"{uri!r} must be an absolute https:// URI", field)
    if parts.fragment or "#" in uri:
        raise ClientError(f"{uri!r} must not contain a fragment (#…)", field)
    if parts.username or parts.password:
        raise ClientError(f"{uri!r} must not contain a user name or password", field)
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ClientError(
            f"{uri!r}: http:// is allowed on loopback only (127.0.0.1, [::1], localhost); "
            "use https://",
            field,
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
            f"{uri!r}: {exc}; logout tokens are not sent there", "--backchannel-logout-uri"
        ) from None
    return uri


def check_logo_uri(uri: str | None) -> str | None:
    """None, or an https URI of the app's logo (shown on the pages of its sign-in; the page's
    Content-Security-Policy then admits images from that host)."""
    from config import ConfigError
    from identity.settings.brand import image_origin

    uri = (uri or "").strip()
    if not uri:
        return None
    if len(uri) > 2000:
        raise ClientError("must be at most 2,000 characters", "--logo-uri")
    try:
        image_origin(uri, "--logo-uri")
    except ConfigError:
        raise ClientError(f"{uri!r} must be an https:// URI", "--logo-uri") from None
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
        raise ClientError("1 to 100 characters, no control characters", "--name")
    if db.session.scalar(select(Client.id).where(Client.name == name)) is not None:
        raise ClientError(f"an app named {name!r} exists already", "--name")
    return name


def check_uris(uris: list[str] | None, field: str) -> list[str]:
    """Each URI checked, duplicates dropped, order kept."""
    return [check_uri(u, field) for u in dict.fromkeys(uris or [])]


def check_scopes(scopes: list[str]) -> list[str]:
    scope_list = list(dict.fromkeys(scopes))
    bad_scopes = [s for s in scope_list if s not in SCOPES]
    if bad_scopes:
        raise ClientError(
            f"{', '.join(bad_scopes)} not supported; use {', '.join(SCOPES)}", "--scope"
        )
    return scope_list


def check_subject_type(value: str, redirect_uris: list[str]) -> str:
    """`public` or `pairwise` (OpenID Connect Core 8); pairwise needs every redirect URI on
    one host, the sector within which a person has one pseudonym."""
    if value not in SUBJECT_TYPES:
        raise ClientError(f"{value!r} is not one of {', '.join(SUBJECT_TYPES)}", "--subject-type")
    if value == "pairwise" and sector(redirect_uris) is None:
        hosts = sorted({urlsplit(u).hostname or "" for u in redirect_uris})
        raise ClientError(
            "pairwise: every redirect URI must be on one host (the sector whose people get "
            "one pseudonym each); "
            + (f"these are on {', '.join(hosts)}" if hosts else "this app has none"),
            "--subject-type",
            joined_by=" ",
        )
    return value


def check_acr(value: str | None) -> str | None:
    """What an app may require of a sign-in: "mfa" (two factors), "phr" (a passkey), or
    None/"none" (what the person has)."""
    if value in (None, "", "none"):
        return None
    if value not in acr.REQUIRABLE:
        raise ClientError(f"{value!r} is not one of none, {', '.join(acr.REQUIRABLE)}", "--acr")
    return value


def check_grants(grant_types: list[str] | None, public: bool) -> list[str]:
    """The grant types (default: authorization_code and refresh_token), duplicates dropped:
    known ones, client_credentials only for a confidential app, refresh_token only with
    authorization_code."""
    grants = list(dict.fromkeys(grant_types or DEFAULT_GRANTS))
    unknown = [g for g in grants if g not in GRANT_TYPES]
    if unknown:
        raise ClientError(
            f"{', '.join(unknown)} not supported; use {', '.join(GRANT_TYPES)}", "--grant-type"
        )
    if public and "client_credentials" in grants:
        raise ClientError(
            "client_credentials needs a confidential app (without --public): a public app "
            "cannot keep a secret",
            "--grant-type",
            joined_by=" ",
        )
    if "refresh_token" in grants and "authorization_code" not in grants:
        raise ClientError(
            "refresh_token goes with authorization_code", "--grant-type", joined_by=" "
        )
    return grants


def check_id_token_alg(id_token_alg: str) -> str:
    """One of IDP_SIGNING_ALGORITHMS."""
    if id_token_alg not in current_app.config["SIGNING_ALGORITHMS"]:
        raise ClientError(
            f"{id_token_alg!r} is not one of IDP_SIGNING_ALGORITHMS "
            f"({', '.join(current_app.config['SIGNING_ALGORITHMS'])})",
            "--id-token-alg",
        )
    return id_token_alg
