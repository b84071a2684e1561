"""OAuth 2.0 providers as data: endpoints, scopes, and where a profile says who someone is.

Each `Provider` is run by identity.connectors.oauth2 (Flask-Dance); its settings are
IDP_<ID>_OAUTH_CLIENT_ID / _SECRET (the button appears when both are set) and the endpoint
overrides IDP_<ID>_AUTHORIZATION_URL, _TOKEN_URL, _API_BASE_URL (config.Config has the
real ones). A profile is read by dotted paths ("data.id": X wraps its user in "data").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from identity.connectors.base import Identity


@dataclass(frozen=True)
class Provider:
    id: str  # also the settings' prefix, the URL path (/login/<id>) and the stored connector
    label: str
    scope: tuple[str, ...]
    profile_path: str  # relative to the API base URL: no leading slash
    subject: str  # the provider's own stable user id
    username: tuple[str, ...]  # tried in order; an address gives its part before the @
    name: str | None
    email: str | None
    # Whether `email` is verified: a path to a boolean (true only when it is exactly true),
    # True when the provider gives only addresses its user confirmed, False when it never says.
    verified: str | bool
    # Flask-Dance's preset for the provider, flask_dance.contrib.<preset> (loaded by the
    # connector, identity.connectors.oauth2); None: a plain OAuth2ConsumerBlueprint.
    preset: str | None = None
    pkce: bool = False
    # A second call listing the person's addresses (GitHub's /user/emails): the address is
    # the primary one when it is verified, else there is none. Replaces `email`/`verified`.
    emails_path: str | None = None

    @property
    def setting(self) -> str:
        return self.id.upper()


PROVIDERS: dict[str, Provider] = {
    p.id: p
    for p in (
        # Full scope URLs: Google answers with them, and oauthlib fails on a "changed" scope.
        Provider(
            "google",
            "Google",
            (
                "openid",
                "https://www.googleapis.com/auth/userinfo.email",
                "https://www.googleapis.com/auth/userinfo.profile",
            ),
            "oauth2/v3/userinfo",
            subject="sub",
            username=("email", "name"),
            name="name",
            email="email",
            verified="email_verified",
            preset="google",
        ),
        # Facebook does not say whether an address is verified: it is treated as unverified.
        Provider(
            "facebook",
            "Facebook",
            ("email", "public_profile"),
            "me?fields=id,name,email,picture",
            subject="id",
            username=("name",),
            name="name",
            email="email",
            verified=False,
            preset="facebook",
        ),
        # Flask-Dance 7 has no X preset; X requires PKCE. It returns confirmed_email only
        # for an address the user has confirmed.
        Provider(
            "twitter",
            "X",
            ("tweet.read", "users.read", "users.email"),
            "2/users/me?user.fields=id,name,username,profile_image_url,confirmed_email",
            subject="data.id",
            username=("data.username",),
            name="data.name",
            email="data.confirmed_email",
            verified=True,
            pkce=True,
        ),
        # One scope: GitHub answers several comma-separated, which oauthlib reads as a
        # changed scope. The public profile needs none; user:email lists the addresses.
        Provider(
            "github",
            "GitHub",
            ("user:email",),
            "user",
            subject="id",
            username=("login",),
            name="name",
            email=None,
            verified=False,
            preset="github",
            pkce=True,
            emails_path="user/emails",
        ),
    )
}


def configured(cfg) -> list[Provider]:
    """The providers whose client id and secret are both set, in PROVIDERS order."""
    return [
        p
        for p in PROVIDERS.values()
        if cfg.get(f"{p.setting}_OAUTH_CLIENT_ID") and cfg.get(f"{p.setting}_OAUTH_CLIENT_SECRET")
    ]


def pick(body: Any, path: str | None) -> Any:
    """The value at a dotted path of a JSON object, None when any step is missing."""
    if path is None:
        return None
    for step in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(step)
    return body


def text(value: Any) -> str | None:
    """A profile value usable as text: strings and (ids) integers, nothing else."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    value = str(value).strip()
    return value or None


def primary_verified(emails: Any) -> str | None:
    """GitHub's /user/emails: the primary address when it is verified."""
    if not isinstance(emails, list):
        return None
    for entry in emails:
        if isinstance(entry, dict) and entry.get("primary") is True:
            return text(entry.get("email")) if entry.get("verified") is True else None
    return None


def to_identity(provider: Provider, body: Any, emails: Any = None) -> Identity | None:
    """The Identity a profile describes; None without a usable id."""
    subject = text(pick(body, provider.subject))
    if subject is None:
        return None
    if provider.emails_path:
        email, verified = primary_verified(emails), True
    else:
        email = text(pick(body, provider.email))
        if isinstance(provider.verified, bool):
            verified = provider.verified
        else:
            verified = pick(body, provider.verified) is True
    name = text(pick(body, provider.name))
    candidates = (text(pick(body, path)) for path in provider.username)
    username = next((v.split("@")[0] for v in candidates if v and v.split("@")[0]), None)
    return Identity(
        connector=provider.id,
        subject=subject,
        username=username or name or f"{provider.label.lower()}-user",
        email=email,
        email_verified=bool(email) and verified,
        name=name,
        amr=("fed",),
    )
