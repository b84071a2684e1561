"""What the provider says: its issuer, a person's claims, an app's ID token algorithm.

The claims about a person go by scope; `auth_time` is when the session's person signed in."""

from __future__ import annotations

import logging
import time

from authlib.oidc.core import UserInfo
from flask import current_app, session

from identity.models import Client, User
from identity.oidc import subjects
from identity.scopes import SCOPES

log = logging.getLogger("identity.oidc")


def issuer() -> str:
    return current_app.config["ISSUER"].rstrip("/")


def user_claims(user: User, scope: str, client: Client | None) -> UserInfo:
    """The claims `client` sees about a person, by the scopes it was granted (its `sub`:
    identity.oidc.subjects)."""
    granted = set(scope.split())
    known = {  # None: the person has none, and the claim is left out
        "name": user.name or None,
        "preferred_username": user.username,
        "email": user.email or None,
        "email_verified": bool(user.email_verified) if user.email else None,
        "groups": list(user.groups or []),
    }
    info = UserInfo(sub=subjects.subject_for(client, user))
    for row in SCOPES:
        if row.name in granted:
            info.update({c: known[c] for c in row.claims if known[c] is not None})
    return info


def client_algorithm(client: Client) -> str:
    """The algorithm of the app's ID and logout tokens: its registered one while this
    provider still signs with it, else the first of IDP_SIGNING_ALGORITHMS (logged)."""
    configured = current_app.config["SIGNING_ALGORITHMS"]
    alg = client.client_metadata.get("id_token_signed_response_alg") or configured[0]
    if alg not in configured:
        log.warning(
            "app %s is registered for %s ID tokens, which IDP_SIGNING_ALGORITHMS no longer "
            "lists: signing with %s",
            client.client_id,
            alg,
            configured[0],
        )
        alg = configured[0]
    return alg


def session_auth_time() -> int:
    """When this session's person proved who they are: for a session restored from a
    remember-me cookie, the sign-in the cookie remembers (OpenID Connect Core 2, auth_time)."""
    return int(session.get("auth_time") or time.time())
