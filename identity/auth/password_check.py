"""Which checks a password typed into the login form gets: the account the typed name names
decides, and only a name no account has goes to every password connector in turn. And the
rule's other half, at registration: a name the directory has is not for a local account.

As Keycloak's LDAP federation decides: the name (username, else e-mail address, folded as
identity.names folds it) is looked up here first.
- An account linked to the directory is checked by its own entry, found by its stable id and
  bound; by its local password first when an administrator gave it one (so that using the
  local password never counts as a wrong directory password against the person's entry).
- Any other account is checked by its local password only: never a bind, so its password
  never reaches the directory, and its wrong passwords never lock the directory entry of the
  same name (ppolicy's `pwdMaxFailure`, Active Directory's lockout threshold).
- A name no account has is offered to each password connector in IDP_PASSWORD_CONNECTORS
  order: the directory's first sign-in creates the account; the local connector answers no.

Every way costs one argon2 verification (a dummy hash where there is no password here) and
the directory's search for the name or the entry, so that neither the answer nor its time
tells an unknown name from a wrong password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from identity.auth import accounts
from identity.connectors import registry as connectors
from identity.connectors.base import Identity
from identity.connectors.local import LocalConnector
from identity.models import User
from identity.passwords import verify_password


@dataclass(frozen=True)
class Check:
    """One check of the typed password; `connector` names it in logs and audit events."""

    connector: str
    run: Callable[[str], Identity | None]


def account_named(name: str) -> User | None:
    """The account whose username is `name`, else the one whose e-mail address it is."""
    return accounts.find(name, by_email=False) or accounts.find(name)


def checks(name: str) -> tuple[User | None, list[Check]]:
    """The account `name` names (None: nobody here), and the checks its password gets, in
    order; the first that gives an Identity wins."""
    user = account_named(name)
    if user is None:
        found = connectors.registry().password()
        plan = [Check(c.id, partial(c.authenticate, name)) for c in found]
        if not any(isinstance(c, LocalConnector) for c in found):
            plan.append(Check("password", _no_password))
        return None, plan
    return user, checks_of(user, name)


def checks_of(user: User, name: str | None = None) -> list[Check]:
    """The checks a password of `user` gets, in order (the account decides: see the module's
    docstring); `name` is what was typed, `user.username` when nothing was (a password asked
    again of the signed-in person)."""
    name = user.username if name is None else name
    found = connectors.registry().password()
    local = next((c for c in found if isinstance(c, LocalConnector)), None)
    directories = [c for c in found if c.provisioning == connectors.DIRECTORY]
    own = Check(local.id, partial(local.check, user)) if local else Check("password", _no_password)
    # The links decide only a directory's check: without one, they are not read.
    linked = {link.connector: link.subject for link in user.links} if directories else {}
    entries = [
        Check(c.id, partial(c.authenticate_linked, linked[c.id]))
        for c in directories
        if c.id in linked
    ]
    if not entries:
        # The directory's part of an unknown name's work, without a bind (see the docstring).
        entries = [
            Check(c.id, partial(_ask_only, c, name)) for c in directories if hasattr(c, "look_up")
        ]
    if entries and not user.password_hash:
        # No local password: the directory first, so that its right password costs no hash;
        # the dummy hash after a wrong one costs what every other wrong password costs.
        return [*entries, own]
    return [own, *entries]


def _no_password(password: str) -> None:
    """No local connector: the hash an unknown name's check would have cost, never a match."""
    verify_password(None, password)


def _ask_only(connector: Any, name: str, password: str) -> None:
    connector.look_up(name)


DIRECTORY_UNCHECKED = (
    "The company directory cannot be asked whether this username is free. Try again in a few "
    "minutes."
)


def directory_has(name: str) -> bool:
    """Whether a directory of the login form has an entry for `name` (asked without a bind).
    Such a name is not for a new local account: it would own the name here, and the
    directory's person could no longer sign in with it. Raises ConnectorError."""
    return any(
        c.look_up(name)
        for c in connectors.registry().password()
        if c.provisioning == connectors.DIRECTORY and hasattr(c, "look_up")
    )
