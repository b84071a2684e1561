"""Accounts for identities: the link an identity signs in by, the account a first sign-in
creates or joins (as its connector's provisioning policy says), another identity connected
from the account page."""

from __future__ import annotations

import re

from flask import current_app
from sqlalchemy import bindparam, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from identity import audit
from identity.auth import accounts
from identity.auth.refusals import refuse
from identity.connectors import registry as connectors
from identity.connectors.base import Identity
from identity.extensions import db
from identity.models import LinkedIdentity, User
from identity.names import fold


def first_sign_in(identity: Identity, label: str) -> LinkedIdentity:
    """An identity seen for the first time, as its connector's provisioning policy says
    (identity.connectors.registry): a new account, or (EMAIL, opted in, verified e-mail)
    the account with that address. Never joined by an unverified address, on either side."""
    policy = connectors.registry().provisioning(identity.connector)
    if policy == connectors.DIRECTORY:
        return provision(identity)
    if policy != connectors.EMAIL:
        refuse("no_account", identity, None)
    owner = None
    if identity.email:
        owner = db.session.scalar(select(User).where(User.email_key == fold(identity.email)))
    if owner is None:
        # Only a verified address is kept: an unverified one could be someone else's, who
        # would later reset "their" password into an account the provider user controls.
        return provision(identity, keep_email=identity.email_verified)
    # The account's own address must have been verified too: anyone can register with
    # someone else's address, and would then receive that person's sign-ins.
    if (
        current_app.config["SOCIAL_AUTO_LINK_VERIFIED_EMAIL"]
        and identity.email_verified
        and owner.email_verified
    ):
        return _add_link(owner, identity, auto=True)
    refuse(
        "email_in_use",
        identity,
        None,
        f"An account already uses the e-mail address {identity.email}. If it is yours, "
        f"sign in to it first, then connect {label} from your account page.",
    )


def link_identity(user: User, identity: Identity, label: str) -> User:
    """Connect `identity` to the signed-in `user` (from the account page)."""
    if address_unproven(user):
        refuse("email_unverified", identity, user, unproven_message(user, label))
    link = find_link(identity)
    if link is not None and link.user_id != user.id:
        refuse(
            "linked_elsewhere",
            identity,
            user,
            f"This {label} account is already connected to another account here. "
            "Disconnect it there first.",
        )
    if link is None:
        _add_link(user, identity, auto=False)
    return user


def address_unproven(user: User) -> bool:
    """Whether the account's address awaits verification. Such an account gains no new way to
    sign in: whoever registered it may not own the address, and a sign-in method they added
    would survive the real owner's password reset (a "trojan identifier")."""
    return bool(
        current_app.config["REGISTRATION_EMAIL_VERIFICATION"]
        and user.email
        and not user.email_verified
    )


def unproven_message(user: User, label: str) -> str:
    return (
        f"Verify your e-mail address {user.email} first (with the link we sent, or a new one "
        f"from your account page), then connect {label}."
    )


def _add_link(user: User, identity: Identity, *, auto: bool) -> LinkedIdentity:
    link = LinkedIdentity(user_id=user.id, connector=identity.connector, subject=identity.subject)
    db.session.add(link)
    audit.record("link", user, method=identity.connector, auto=auto)
    try:
        db.session.commit()
    except IntegrityError:
        # The same (connector, subject) was linked concurrently: at most one account has it.
        db.session.rollback()
        existing = find_link(identity)
        if existing is None or existing.user_id != user.id:
            refuse(
                "linked_elsewhere",
                identity,
                user,
                "This account is already connected to another account here.",
            )
        return existing
    return link


def provision(identity: Identity, *, keep_email: bool = True) -> LinkedIdentity:
    """A new account linked to `identity`, with no local password (committed).

    The username is the identity's, made safe and unique; the e-mail address is kept only
    when no other account uses it (accounts are never joined by e-mail).
    """
    base = local_username(identity.username)
    for attempt in range(3):
        user = User(
            username=_unique_username(base),
            name=identity.name,
            password_hash=None,
            groups=list(identity.groups),
            group_dns=list(identity.group_dns),
        )
        if keep_email and identity.email and not accounts.email_taken(identity.email):
            user.set_email(identity.email)
            user.email_verified = identity.email_verified
        try:
            db.session.add(user)
            db.session.flush()
            link = LinkedIdentity(
                user_id=user.id, connector=identity.connector, subject=identity.subject
            )
            db.session.add(link)
            # The name it has there: the admin page says why ours differs (taken here).
            audit.record(
                "register",
                user,
                method=identity.connector,
                jit=True,
                remote_username=identity.username,
            )
            db.session.commit()
            return link
        except IntegrityError:
            # A concurrent first sign-in of the same person won: use its account. Or another
            # account took the username or address meanwhile: try again, now seeing it.
            db.session.rollback()
            existing = find_link(identity)
            if existing is not None:
                return existing
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def refresh(user: User, identity: Identity) -> None:
    """Bring name, e-mail and groups up to date with the directory (the caller commits)."""
    from identity.oidc import recheck

    recheck.apply(user, identity)


def follow_groups(user: User, identity: Identity) -> None:
    """The groups an upstream says the person is in now, on the account (the caller commits),
    a change audited; not for an account linked to the directory, whose groups the directory
    decides (identity.oidc.recheck)."""
    if any(link.connector == "ldap" for link in user.links):
        return
    before, now = list(user.groups or []), list(identity.groups)
    if set(before) != set(now):
        audit.record(
            "signin.groups_changed",
            user,
            method=identity.connector,
            added=sorted(set(now) - set(before)),
            removed=sorted(set(before) - set(now)),
        )
        user.groups = now


def local_username(name: str) -> str:
    """A directory or provider name as a username of ours: lower case, [a-z0-9._-]."""
    safe = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return safe[:56] or "user"


def _unique_username(base: str) -> str:
    candidate, n = base, 1
    while accounts.find(candidate, by_email=False) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


# Every sign-in looks its link up: built once, with the account in the same query.
LINK_BY_SUBJECT = (
    select(LinkedIdentity)
    .where(
        LinkedIdentity.connector == bindparam("connector"),
        LinkedIdentity.subject == bindparam("subject"),
    )
    .options(joinedload(LinkedIdentity.user))
)


def find_link(identity: Identity) -> LinkedIdentity | None:
    """The link of `identity`: the one this request already read (a directory's check finds
    the entry by the link's subject, read from the account), else from the database."""
    key = (identity.connector, identity.subject)
    for obj in db.session.identity_map.values():
        if isinstance(obj, LinkedIdentity) and not inspect(obj).expired_attributes:
            if obj in db.session.deleted:
                continue
            if (obj.connector, obj.subject) == key:
                return obj
    return db.session.scalar(
        LINK_BY_SUBJECT, {"connector": identity.connector, "subject": identity.subject}
    )
