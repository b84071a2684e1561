"""The rules a new local account's username, e-mail address and password meet, for the
`user create` command and the first administrator from IDP_ADMIN_* (one set of rules)."""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

from identity.auth.forms import USERNAME_RE
from identity.forms import BAD_CHARS
from identity.names import fold
from identity.passwords import policy_errors


class Invalid(Exception):
    """One value breaks the rules: `field` is username, email, name or password; `detail`
    says what is wrong, for a message that names the option or setting it came from."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def names(username: str, email: str, name: str | None = None) -> tuple[str, str]:
    """The username folded and the e-mail address normalised, as the account will have
    them; raises Invalid."""
    username = fold(username)
    if not 2 <= len(username) <= 64 or not re.match(USERNAME_RE, username):
        raise Invalid(
            "username",
            "use 2 to 64 characters: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit",
        )
    if len(email) > 254 or BAD_CHARS.search(email):
        raise Invalid("email", "not a valid e-mail address")
    try:
        email = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise Invalid("email", str(exc)) from None
    if name is not None and (len(name) > 200 or BAD_CHARS.search(name)):
        raise Invalid("name", "at most 200 characters, no control characters")
    return username, email


def password(password: str, username: str, email: str) -> None:
    """Raises Invalid when the password breaks the policy (the policy's own words)."""
    if BAD_CHARS.search(password):
        raise Invalid("password", "it contains control characters")
    problems = policy_errors(password, username, email)
    if problems:
        raise Invalid("password", " ".join(problems))
