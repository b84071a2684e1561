"""Local accounts: a username (or e-mail) and an argon2id password stored here."""

from __future__ import annotations

from identity.connectors.base import Identity
from identity.extensions import db
from identity.models import User
from identity.passwords import hash_password, needs_rehash, verify_password


class LocalConnector:
    id = "local"
    label = "Password"
    icon = None
    kind = "password"
    provisioning = "existing"

    def authenticate(self, username: str, password: str) -> Identity | None:
        return self.check(User.find(username), password)

    def check(self, user: User | None, password: str) -> Identity | None:
        """The account's local password; one hash verification whether `user` is None, has
        no local password or has one, so timing tells nothing."""
        if not verify_password(user.password_hash if user else None, password):
            return None
        assert user is not None and user.password_hash is not None
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
            db.session.commit()
        return identity_for(user)


def identity_for(user: User) -> Identity:
    return Identity(
        connector="local",
        subject=str(user.id),
        username=user.username,
        email=user.email,
        email_verified=user.email_verified,
        name=user.name,
        amr=("pwd",),
    )
