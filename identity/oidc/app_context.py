"""Which app a sign-in is for: the registered app that a pending /authorize request names.

The login page, the second step and consent say "Sign in to continue to <app>" with the
host the person will be sent back to. Nothing shown comes from the query string but the
client_id, which must name a registered app; the name, the host and the logo are the
registration's. The host is that of the redirect URI the request asks for, and only when it
is one the app registered (else /authorize would refuse the request anyway): a link made to
borrow an app's name ends at that app's own address, never at the link maker's."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from flask import url_for

from config import ConfigError
from identity.models import Client
from identity.oidc import client_cache
from identity.security import allow_images_from, safe_next
from identity.settings.brand import image_origin

MAX_CLIENT_ID = 48


@dataclass(frozen=True)
class AppContext:
    name: str
    host: str  # host[:port] of the redirect URI the answer will go to
    logo_uri: str | None


def for_next(next_value: str | None) -> AppContext | None:
    """The app of the /authorize request in `next_value` (a `next` parameter), or None when
    it is no such request or does not name a registered app and one of its redirect URIs."""
    target = safe_next(next_value)
    if not target:
        return None
    parts = urlsplit(target)
    if parts.path != url_for("oidc.authorize"):
        return None
    params = parse_qs(parts.query, keep_blank_values=True)
    client_ids = params.get("client_id", [])
    if len(client_ids) != 1:
        return None
    client_id = client_ids[0]
    if not client_id or len(client_id) > MAX_CLIENT_ID or not client_id.isprintable():
        return None
    client = client_cache.lookup(client_id)
    if client is None:
        return None
    return for_client(client, params.get("redirect_uri"))


def for_client(client: Client, asked: list[str] | str | None) -> AppContext | None:
    """What the pages show of `client`, answering to `asked` (the request's redirect_uri)."""
    registered = client.redirect_uris
    if isinstance(asked, str):
        asked = [asked]
    if asked:
        if len(asked) != 1 or asked[0] not in registered:
            return None
        uri = asked[0]
    elif len(registered) == 1:
        uri = registered[0]  # the default when a request names none
    else:
        return None
    return AppContext(client.name, urlsplit(uri).netloc, _logo(client))


def _logo(client: Client) -> str | None:
    """The app's logo URI, its origin allowed in this page's CSP; None when there is none
    (or it is not an https URI: the registration checks refuse those)."""
    logo = client.client_metadata.get("logo_uri")
    if not logo:
        return None
    try:
        allow_images_from(image_origin(logo, "logo_uri"))
    except ConfigError:
        return None
    return logo
