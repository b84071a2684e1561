"""The scopes an app may ask for, in one table: the claims each releases and the words each
page uses for it (consent, the account page, the admin console).

Discovery's `scopes_supported` and `claims_supported`, the claims of a person
(identity.oidc.claims), the consent page, the account page's apps, the admin's app form and
the `client` command's check all read this table."""

from __future__ import annotations

from dataclasses import dataclass

# OpenID Connect Core 11: a refresh token usable while the person is away.
OFFLINE_ACCESS = "offline_access"


@dataclass(frozen=True)
class Scope:
    name: str
    claims: tuple[str, ...]  # what it adds to the ID token and userinfo (`sub` always comes)
    consent: str  # the consent page's line
    short: str | None  # the account page's word for it; None: not listed there
    admin: str  # the admin's app form, after the name


SCOPES = (
    Scope("openid", (), "Know who you are (your account's identifier)", None, "who the person is"),
    Scope(
        "profile",
        ("name", "preferred_username"),
        "Your name and username",
        "name",
        "name and username",
    ),
    Scope("email", ("email", "email_verified"), "Your e-mail address", "e-mail", "e-mail address"),
    Scope("groups", ("groups",), "The groups you belong to", "groups", "the groups they belong to"),
    Scope(
        OFFLINE_ACCESS,
        (),
        "Stay connected when you are not using it",
        "offline access",
        "access while they are away",
    ),
)
NAMES = tuple(scope.name for scope in SCOPES)
BY_NAME = {scope.name: scope for scope in SCOPES}
# What an app registered without a list of scopes may ask for.
DEFAULTS = ("openid", "profile", "email")
# Every claim about a person a scope can release, in the table's order.
CLAIMS = tuple(claim for scope in SCOPES for claim in scope.claims)


def consent_text(name: str) -> str:
    scope = BY_NAME.get(name)
    return scope.consent if scope else name


def short_text(name: str) -> str | None:
    """The account page's word for a scope; None for one it does not list (openid)."""
    scope = BY_NAME.get(name)
    return scope.short if scope else name


def without_offline_access(scope: str) -> str:
    """`scope` without `offline_access` (OpenID Connect Core 11: ignored unless consented)."""
    return " ".join(s for s in scope.split() if s != OFFLINE_ACCESS)
