"""Facebook, Google and X through Flask-Dance: each provider's blueprint, and its profile as
an Identity. The blueprints' callbacks (signing in, failures as pages) are
identity.auth.social_signin's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, g, url_for
from flask_dance.consumer import OAuth2ConsumerBlueprint
from flask_dance.consumer.storage import BaseStorage
from flask_dance.contrib.facebook import make_facebook_blueprint
from flask_dance.contrib.google import make_google_blueprint

from identity.connectors.base import Identity
from identity.security import safe_next

NEXT_KEY = "social_next"
LINK_KEY = "social_link"


class RequestStorage(BaseStorage):
    """Holds the provider's token for the rest of the request only: long enough to read the
    profile, never written anywhere.

    The service uses a provider only to learn who signs in, never to call it on the
    person's behalf later, so a stored token would be a secret kept for nothing (and a
    prize in a database leak). Flask-Dance's session or SQLAlchemy storages would keep it.
    """

    def get(self, blueprint):
        return g.get(f"_social_token_{blueprint.name}")

    def set(self, blueprint, token):
        setattr(g, f"_social_token_{blueprint.name}", token)

    def delete(self, blueprint):
        g.pop(f"_social_token_{blueprint.name}", None)


@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    scope: list[str]
    profile_path: str
    to_identity: Callable[[dict], Identity | None]


def google_identity(p: dict) -> Identity | None:
    if not p.get("sub"):
        return None
    email = p.get("email")
    return Identity(
        connector="google",
        subject=str(p["sub"]),
        username=(email or "").split("@")[0] or p.get("name") or "google-user",
        email=email,
        email_verified=p.get("email_verified") is True,
        name=p.get("name"),
        amr=("fed",),
    )


def facebook_identity(p: dict) -> Identity | None:
    if not p.get("id"):
        return None
    # Facebook does not say whether an address is verified: treat it as unverified.
    return Identity(
        connector="facebook",
        subject=str(p["id"]),
        username=p.get("name") or "facebook-user",
        email=p.get("email"),
        email_verified=False,
        name=p.get("name"),
        amr=("fed",),
    )


def twitter_identity(body: dict) -> Identity | None:
    p = body.get("data") if isinstance(body.get("data"), dict) else {}
    if not p.get("id"):
        return None
    # X returns confirmed_email only for an address the user has confirmed.
    email = p.get("confirmed_email")
    return Identity(
        connector="twitter",
        subject=str(p["id"]),
        username=p.get("username") or "x-user",
        email=email,
        email_verified=bool(email),
        name=p.get("name"),
        amr=("fed",),
    )


PROVIDERS = {
    "facebook": Provider(
        "facebook",
        "Facebook",
        ["email", "public_profile"],
        "me?fields=id,name,email,picture",
        facebook_identity,
    ),
    # Full scope URLs: Google answers with them, and oauthlib fails on a "changed" scope.
    "google": Provider(
        "google",
        "Google",
        [
            "openid",
            "https://www.googleapis.com/auth/userinfo.email",
            "https://www.googleapis.com/auth/userinfo.profile",
        ],
        "oauth2/v3/userinfo",
        google_identity,
    ),
    "twitter": Provider(
        "twitter",
        "X",
        ["tweet.read", "users.read", "users.email"],
        "2/users/me?user.fields=id,name,username,profile_image_url,confirmed_email",
        twitter_identity,
    ),
}


class SocialConnector:
    """The RedirectConnector for one provider: the login page shows its button."""

    def __init__(self, provider: Provider):
        self.name = provider.name
        self.label = provider.label

    def login_url(self, next_url: str | None = None) -> str:
        return url_for(f"{self.name}.login", next=safe_next(next_url) or None)


def configured(cfg) -> list[str]:
    return [
        name
        for name in PROVIDERS
        if cfg.get(f"{name.upper()}_OAUTH_CLIENT_ID")
        and cfg.get(f"{name.upper()}_OAUTH_CLIENT_SECRET")
    ]


def blueprint(app: Flask, provider: Provider) -> OAuth2ConsumerBlueprint:
    """The Flask-Dance blueprint of one provider: its addresses, PKCE, timeouts, and the
    token kept for this request only. Its callbacks are identity.auth.social_signin's."""
    cfg = app.config
    key = provider.name.upper()
    if provider.name == "google":
        bp = make_google_blueprint(scope=provider.scope)
    elif provider.name == "facebook":
        bp = make_facebook_blueprint(scope=provider.scope)
    else:  # Flask-Dance 7 has no X preset; X requires PKCE.
        bp = OAuth2ConsumerBlueprint(
            "twitter",
            __name__,
            scope=provider.scope,
            use_pkce=True,
            code_challenge_method="S256",
            base_url=cfg["TWITTER_API_BASE_URL"],
            authorization_url=cfg["TWITTER_AUTHORIZATION_URL"],
            token_url=cfg["TWITTER_TOKEN_URL"],
        )
        bp.from_config["client_id"] = "TWITTER_OAUTH_CLIENT_ID"
        bp.from_config["client_secret"] = "TWITTER_OAUTH_CLIENT_SECRET"
    bp.authorization_url = cfg[f"{key}_AUTHORIZATION_URL"]
    bp.token_url = cfg[f"{key}_TOKEN_URL"]
    bp.base_url = cfg[f"{key}_API_BASE_URL"]
    # Every call to the provider has a timeout: the token exchange here, the profile in
    # finish(). The CA goes with each call: requests lets REQUESTS_CA_BUNDLE override a
    # session's own setting.
    bp.token_url_params = {"timeout": cfg["SOCIAL_TIMEOUT"], "verify": verify(cfg)}
    bp.storage = RequestStorage()
    return bp


def verify(cfg) -> str | bool:
    """The CA bundle to check the provider's certificate with (SOCIAL_CA_FILE), or the
    default one."""
    return cfg["SOCIAL_CA_FILE"] or True
