"""The connector contract: an Identity value, two small protocols, ConnectorError and its
DirectoryMisconfigured and LockedOut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Identity:
    """What a connector has verified about a person. `subject` is stable per connector."""

    connector: str
    subject: str
    username: str
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    groups: tuple[str, ...] = ()
    # The same groups' DNs, normalised (identity.settings.ldap.normal_dn): names are not
    # unique in a directory.
    group_dns: tuple[str, ...] = ()
    # Authentication methods (RFC 8176): "pwd" for a password, "fed" for a federated sign-in.
    amr: tuple[str, ...] = ("pwd",)


class ConnectorError(Exception):
    """The backend could not answer (directory down, provider timeout): not a wrong password.

    The message is for the log; people see a generic "try again later".
    """


class DirectoryMisconfigured(ConnectorError):
    """The backend answered, and said the service's own settings are wrong (the service
    account's DN or password, a search base that does not exist, a filter that is not a
    filter): waiting will not help, an administrator must change a setting.

    The message is for the log and the admin console; people are told to tell the
    administrators rather than to try again later.
    """


class LockedOut(ConnectorError):
    """The backend answered: the person's entry is locked for now (OpenLDAP ppolicy after
    failed binds), not removed. Nobody signs in to that account while it lasts, and nothing
    is decided: it is not a leaver, and whoever can fail a few binds must not be able to
    disable someone else's account for good.
    """


@runtime_checkable
class PasswordConnector(Protocol):
    """Checks a username and password typed into the login form."""

    name: str

    def authenticate(self, username: str, password: str) -> Identity | None:
        """The Identity when the credentials are right, None when they are wrong.

        Raises ConnectorError when the backend cannot tell.
        """


@runtime_checkable
class RedirectConnector(Protocol):
    """Signs people in by sending the browser elsewhere (OAuth 2.0 / OpenID Connect)."""

    name: str
    label: str

    def login_url(self) -> str:
        """Where the login page's button for this connector points."""
