"""Accounts linked to the directory, read again: a person deleted or locked there is disabled
here (sessions end, tokens are revoked, apps are told), and groups, name and e-mail address
follow the entry as it is now."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

from identity import audit
from identity.connectors.base import Identity, LockedOut
from identity.extensions import db
from identity.models import LinkedIdentity, User
from identity.models.users import utcnow
from identity.names import fold
from identity.oidc.logout import disable_account

if TYPE_CHECKING:
    from identity.connectors.ldap import LdapConnector, Lookup

# What check() did: nothing to check, checked recently enough, or the entry was read and the
# account kept as it was, brought up to date, or disabled.
NOT_LINKED, FRESH, UNCHANGED, UPDATED, DISABLED = (
    "not_linked",
    "fresh",
    "unchanged",
    "updated",
    "disabled",
)


def directory_link(user: User) -> LinkedIdentity | None:
    """The account's link to the directory (its subject is the entry's stable id), if any."""
    return next((link for link in user.links if link.connector == "ldap"), None)


def connector() -> LdapConnector | None:
    """The directory connector (the login form's, or one of its own when the directory is not
    a password connector); None when no directory is configured. ldap3 is loaded only
    where one is (IDP_PASSWORD_CONNECTORS cannot name ldap without IDP_LDAP_URL)."""
    app = current_app._get_current_object()
    if not app.config["LDAP_URL"]:
        return None
    from identity.connectors.ldap import LdapConnector
    from identity.connectors.ldap_connection import Settings

    for c in app.extensions["idp.connectors"].password():
        if isinstance(c, LdapConnector):
            return c
    if "idp.directory" not in app.extensions:
        app.extensions["idp.directory"] = LdapConnector(Settings.from_config(app.config))
    return app.extensions["idp.directory"]


def check(user: User, *, force: bool = False, found: Lookup | None = None) -> str:
    """Read the entry of a directory-linked account when the last reading is older than
    IDP_LDAP_RECHECK_SECONDS (always with `force`), and act on it: gone or locked disables
    the account (identity.oidc.logout.disable_account: sessions, tokens, back-channel
    logouts; audited), present brings groups, name and e-mail up to date. Commits.

    Returns NOT_LINKED, FRESH, UNCHANGED, UPDATED or DISABLED. Raises ConnectorError when
    the directory cannot tell: the caller refuses, nothing is decided on stale data; and its
    LockedOut while failed binds keep the entry locked: the caller refuses, nothing is
    decided either, and the next check reads the entry again.

    `found` is a reading of the entry the caller has just made (`ldap sync` reads every entry
    before it changes anything); it is used instead of asking the directory again."""
    # The directory first: without one, the account's links are not even read.
    ldap = connector()
    if ldap is None:
        return NOT_LINKED  # the directory was unconfigured: its links sign nobody in
    link = directory_link(user)
    if link is None:
        return NOT_LINKED
    now = utcnow()
    window = current_app.config["LDAP_RECHECK_SECONDS"]
    if not force and link.checked_at and (now - link.checked_at).total_seconds() < window:
        return FRESH
    if found is None:
        found = ldap.lookup(link.subject)
    if found.state == "locked_out":
        raise LockedOut(f"{found.dn} is locked by failed binds")
    # Each transaction writes the link after the account (LinkedIdentity.write).
    if found.state != "present":
        outcome = UNCHANGED
        if not user.disabled:
            disable_account(user, "directory.account_disabled", reason=found.state, dn=found.dn)
            outcome = DISABLED
        link.write(checked_at=now)
        db.session.commit()
        return outcome
    assert found.identity is not None
    changed = apply(user, found.identity)
    link.write(checked_at=now)
    db.session.commit()
    return UPDATED if changed else UNCHANGED


def apply(user: User, identity: Identity) -> bool:
    """Bring name, e-mail address and groups up to date with a directory identity (the
    caller commits); True when anything changed. A change of groups is audited."""
    before = (user.name, user.email_key, set(user.groups or []), set(user.group_dns or []))
    user.name = identity.name
    old_dns, new_dns = set(user.group_dns or []), set(identity.group_dns)
    if old_dns != new_dns or set(user.groups or []) != set(identity.groups):
        audit.record(
            "directory.groups_changed",
            user,
            added=sorted(new_dns - old_dns),
            removed=sorted(old_dns - new_dns),
        )
    user.groups = list(identity.groups)
    user.group_dns = list(identity.group_dns)
    wanted = fold(identity.email) if identity.email else None
    if wanted != user.email_key:
        # Another account's address is never taken over: this one keeps its old one.
        if wanted is None or not User.email_taken(identity.email):
            user.set_email(identity.email)
            user.email_verified = identity.email_verified if identity.email else False
    return before != (user.name, user.email_key, set(user.groups), set(user.group_dns))
