"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app


def hasher() -> PasswordHasher:
    """The hasher at the configured parameters, built once per app."""
    ext = current_app.extensions
    if "idp.hasher" not in ext:
        cfg = current_app.config
        ext["idp.hasher"] = PasswordHasher(
            time_cost=cfg["ARGON2_TIME_COST"],
            memory_cost=cfg["ARGON2_MEMORY_COST"],
            parallelism=cfg["ARGON2_PARALLELISM"],
            type=Type.ID,
        )
    return ext["idp.hasher"]


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when password matches; with no stored hash a dummy hash is verified so a
    missing account costs the same time as a wrong password."""
    ph = hasher()
    ext = current_app.extensions
    if stored_hash is None:
        if "idp.dummy_hash" not in ext:
            ext["idp.dummy_hash"] = ph.hash("dummy password never matches")
        stored_hash, password = ext["idp.dummy_hash"], password + "\0never"
        try:
            ph.verify(stored_hash, password)
        except VerificationError:
            pass
        return False
    try:
        return ph.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return hasher().check_needs_rehash(stored_hash)


def policy_errors(
    password: str, username: str | None = None, email: str | None = None
) -> list[str]:
    """Everything wrong with a new password, as messages for the person choosing it."""
    cfg = current_app.config
    lo, hi = cfg["PASSWORD_MIN_LENGTH"], cfg["PASSWORD_MAX_LENGTH"]
    errors = []
    if len(password) < lo:
        errors.append(f"Use at least {lo} characters.")
    if len(password) > hi:
        errors.append(f"Use at most {hi} characters.")
    folded = password.casefold()
    if username and folded == username.casefold():
        errors.append("The password cannot be your username.")
    if email and folded == email.casefold():
        errors.append("The password cannot be your e-mail address.")
    return errors
