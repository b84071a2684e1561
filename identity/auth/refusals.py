"""Why a verified identity does not sign in: SignInRefused, its messages, and refuse(), which
audits the refusal and raises it."""

from __future__ import annotations

from typing import NoReturn

from identity import audit
from identity.connectors.base import Identity
from identity.extensions import db
from identity.models import User

# What people see when the directory cannot be asked (login form, the re-check of a
# directory-linked account signing in another way, the console): down, or, when its answer
# says the service's own settings are wrong, misconfigured (waiting will not help).
BACKEND_DOWN = (
    "The company directory is unavailable, so directory accounts cannot sign in right now. "
    "Please try again in a few minutes."
)
DIRECTORY_MISCONFIGURED = (
    "Sign-in with the company directory is misconfigured on this service, so directory "
    "accounts cannot sign in. Please tell your administrators: trying again will not help "
    "until they fix it."
)


class SignInRefused(Exception):
    """A verified identity that may not sign in; `reason` is a code for the audit log,
    `status` the HTTP status of the page that says so."""

    def __init__(self, reason: str, message: str, status: int = 403):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


MESSAGES = {
    "no_account": "No account is linked to this sign-in.",
    "disabled": "This account is disabled. Ask an administrator.",
    "locked_out": (
        "Your directory account is locked after too many wrong passwords. It unlocks by "
        "itself after a while, or ask an administrator."
    ),
}


def refuse(
    reason: str,
    identity: Identity,
    user: User | None,
    message: str | None = None,
    *,
    status: int = 403,
) -> NoReturn:
    """Record the refusal (signin.failure, `reason`) and raise it, with `message` or the
    reason's own."""
    audit.record("signin.failure", user, method=identity.connector, reason=reason)
    db.session.commit()
    raise SignInRefused(reason, message or MESSAGES[reason], status)
