"""What the provider says: its issuer, a person's claims, an app's ID token algorithm.

The claims about a person go by scope; `auth_time` is when the session's person signed in."""

from __future__ import annotations

import logging
import time

from authlib.oidc.core import UserInfo
from flask import current_app, session

from identity.models import Client, User
from identity.models.oauth import OFFLINE_ACCESS
from identity.oidc import subjects

log = logging.getLogger("identity.oidc")


def issuer() -> str:
    return current_app.config["ISSUER"].rstrip("/")


def user_claims(user: User, scope: str, client: Client | None) -> UserInfo:
    """The claims `client` sees about a person, by the scopes it was granted (its `sub`:
    identity.oidc.subjects)."""
    scopes = set(scope.split())
    info = UserInfo(sub=subjects.subject_for(client, user))
    if "profile" in scopes:
        info["preferred_username"] = user.username
        if user.name:
            info["name"] = user.name
    if "email" in scopes and user.email:
        info["email"] = user.email
        info["email_verified"] = bool(user.email_verified)
    if "groups" in scopes:
        info["groups"] = list(user.groups or [])
    return info


def without_offline_access(scope: str) -> str:
    """`scope` without `offline_access` (OpenID Connect Core 11: ignored unless consented)."""
    return " ".join(s for s in scope.split() if s != OFFLINE_ACCESS)


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
