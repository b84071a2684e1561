"""Accounts linked to the directory, at a forward-auth check: their entry is read again when
the last reading is older than IDP_LDAP_RECHECK_SECONDS (identity.oidc.recheck), so that a
leaver stops reaching the protected sites then, not at the next sign-in or `ldap sync`."""

from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import Row

from identity.connectors import ConnectorError, LockedOut
from identity.extensions import db
from identity.models import User
from identity.models.users import utcnow
from identity.oidc import recheck

log = logging.getLogger("identity.forward_auth")


def due(account: Row) -> bool:
    """Whether the account read with the cookie (its `link_id` and `checked_at`) is linked
    to the directory and its last reading is too old. Decided on the row already read: the
    common path asks nothing more."""
    if account.link_id is None:
        return False
    if account.checked_at is None:
        return True
    age = (utcnow() - account.checked_at).total_seconds()
    return age >= current_app.config["LDAP_RECHECK_SECONDS"]


def still_allowed(user_id: int) -> bool:
    """Read the entry again and act on it (gone or locked: the account is disabled, its
    sessions end; groups, name and e-mail follow the entry). False when the account may not
    pass now: disabled, or its entry locked by failed binds (nothing is decided then).
    Raises ConnectorError when the directory cannot tell: the caller refuses."""
    user = db.session.get(User, user_id)
    if user is None:
        return False
    try:
        recheck.check(user)
    except LockedOut as exc:
        log.info("forward auth: %s is locked in the directory: %s", user.username, exc)
        return False
    except ConnectorError as exc:
        log.error("directory re-check of %s failed: %s", user.username, exc)
        raise
    return not user.disabled
