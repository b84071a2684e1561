"""Proof that the signed-in person is at the keyboard: their password, asked again, or a
sign-in in this browser a few minutes ago."""

from __future__ import annotations

import time

from flask import session
from flask_login import current_user

from identity import audit
from identity.auth import password_check
from identity.auth.provisioning import find_link
from identity.connectors import ConnectorError
from identity.connectors.base import AccountProblem
from identity.extensions import db
from identity.throttle import throttle

NOT_YOURS = "That is not your password."
# A sign-in this recent, in this very browser, is proof enough for a change to one's own
# factors (removing a passkey, new recovery codes): GitHub's "sudo mode" window. It is what
# an account with neither a password nor an authenticator app can always give.
FRESH_SECONDS = 5 * 60


def fresh_signin() -> bool:
    """Whether this session comes from a sign-in (every factor presented, not a remember-me
    restoration) of the last FRESH_SECONDS."""
    auth_time = session.get("auth_time")
    if not session.get("_fresh") or session.get("restored_at") or not isinstance(auth_time, int):
        return False
    return 0 <= time.time() - auth_time <= FRESH_SECONDS


def has_password(user) -> bool:
    """Whether `user` can be asked for a password (a local one, or the directory's)."""
    return user.password_hash is not None or any(link.connector == "ldap" for link in user.links)


def password_problem(password: str, failure_event: str = "admin.reauth_failure") -> str | None:
    """None when `password` proves that the signed-in person is at the keyboard: any
    password connector (local, directory) must verify it for this very account. Else the
    message: the lockout's, when the account or address may not try now (nothing is checked)."""
    user = current_user._get_current_object()
    # Counted like a sign-in: an open session is no way to guess the password.
    refusal = throttle().signin_begin(user.username)
    if refusal:
        return refusal.message
    # The account's own checks (auth.password_check): a local account's password never
    # goes to the directory, whose entry of the same name would count it as a failure.
    for check in password_check.checks_of(user):
        try:
            identity = check.run(password)
        except (ConnectorError, AccountProblem):
            continue
        if identity is None:
            continue
        link = find_link(identity)
        if link is not None and link.user_id == user.id:
            throttle().signin_release(user.username)
            return None
    audit.record(failure_event, user)
    throttle().signin_failed(user.username)
    db.session.commit()
    return NOT_YOURS
