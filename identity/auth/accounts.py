"""Local accounts: find, create, check and change passwords."""

from __future__ import annotations

from identity import audit
from identity.extensions import db
from identity.models import LinkedIdentity, User
from identity.models.users import utcnow
from identity.names import fold
from identity.passwords import hash_password, verify_password

# Lookup by username (or e-mail address), case-insensitively.
find = User.find
# Whether any account has this e-mail address, case-insensitively.
email_taken = User.email_taken


def create_local(
    username: str,
    email: str,
    password: str | None,
    *,
    admin: bool = False,
    name: str | None = None,
) -> User:
    """A new account linked to the local connector, with `password` or (None) none yet;
    committed. Raises IntegrityError when the username or e-mail address is taken.
    """
    user = User(
        username=fold(username),
        password_hash=hash_password(password) if password is not None else None,
        is_admin=admin,
        name=name,
        password_changed_at=utcnow() if password is not None else None,
    )
    user.set_email(email)
    db.session.add(user)
    db.session.flush()
    db.session.add(LinkedIdentity(user_id=user.id, connector="local", subject=str(user.id)))
    audit.record("register", user, method="local", admin=admin)
    db.session.commit()
    return user


def check_password(user: User, password: str) -> bool:
    return verify_password(user.password_hash, password)


def set_password(user: User, password: str, *, keep_sid: str | None = None) -> None:
    """Store a new password and end every session (but `keep_sid`) and every remember-me
    cookie of the account (the caller commits)."""
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    user.end_sessions(keep_sid)
