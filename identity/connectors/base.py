"""The connector contract: an Identity value, the password and redirect protocols, and the
failures (AccountProblem, ConnectorError, DirectoryMisconfigured, LockedOut,
RedirectFailure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


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


class AccountProblem(Exception):
    """The password was right but the account may not sign in now (a directory's password
    policy, a disabled entry); `message` says why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


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


class RedirectFailure(Exception):
    """A redirect sign-in that did not give an Identity. `reason` is one of REASONS (the
    handler picks the page and status from it), `error` the upstream's error code when it
    sent one, `detail` for the log only (never shown: it is the upstream's text)."""

    REASONS = (
        "access_denied",  # the person said no at the upstream
        "provider_error",  # the upstream sent back another error code
        "state_mismatch",  # the callback did not start in this browser, or was replayed
        "missing_code",  # a callback with neither code nor error
        "token_exchange_failed",  # the upstream refused the code
        "bad_answer",  # an answer that could not be read (not JSON)
        "bad_profile",  # no usable profile: error status, malformed, or no id in it
        "timeout",
        "provider_unreachable",
        # OpenID Connect upstreams (identity.connectors.oidc_upstream):
        "wrong_issuer",  # discovery names another issuer than the configured one
        "bad_metadata",  # discovery or the keys unusable (not https, no S256, no key set)
        "bad_id_token",  # no ID token, or one that fails a check (signature, aud, exp, nonce)
        "bad_userinfo",  # userinfo refused, unreadable, or about someone else (its sub)
        "bad_callback",  # a callback with neither code, state nor error
    )

    def __init__(self, reason: str, detail: str = "", error: str | None = None):
        if reason not in self.REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.error = error


@runtime_checkable
class PasswordConnector(Protocol):
    """Checks a username and password typed into the login form (kind "password")."""

    id: str

    def authenticate(self, username: str, password: str) -> Identity | None:
        """The Identity when the credentials are right, None when they are wrong.

        Raises ConnectorError when the backend cannot tell.
        """


class RedirectHandler(Protocol):
    """What a redirect connector hands its results to (identity.auth.finalize)."""

    def start(self, connector: RedirectConnector) -> None:
        """A person pressed the connector's button: remember where they go afterwards."""

    def finish(self, connector: RedirectConnector, result: Identity | RedirectFailure) -> Any:
        """The callback's outcome: sign in, link or show the failure; the response."""

    def trial_pending(self, connector_id: str) -> bool:
        """Whether this callback is an administrator's trial of that connector (one that
        has no button, being disabled, may then answer it)."""


@runtime_checkable
class RedirectConnector(Protocol):
    """Signs people in by sending the browser elsewhere (OAuth 2.0 / OpenID Connect)."""

    id: str
    label: str

    def login_url(self, next_url: str | None = None) -> str:
        """Where the connector's button points (`next_url`: where to go afterwards)."""

    def init_app(self, app: Any, handler: RedirectHandler) -> None:
        """Register the routes; the callback returns `handler.finish(self, result)`."""
