"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

from identity import malloc, weak_passwords
from identity.one_at_a_time import hashing


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
    try:
        with hashing():
            return hasher().hash(password)
    finally:
        malloc.freed()  # its ARGON2_MEMORY_COST, given back once sign-ins stop


def warm_up() -> None:
    """Build the hasher and the dummy hash at start, so the first sign-in attempt for an
    unknown account costs one hash like every other. The common-password lists are not
    loaded here: they would add 12 MB to every worker for the rare request that sets a
    password, which loads them once (about 0.1 s) on its first use."""
    _dummy_hash()


def _dummy_hash() -> str:
    ext = current_app.extensions
    if "idp.dummy_hash" not in ext:
        ext["idp.dummy_hash"] = hash_password(secrets.token_urlsafe(16))
    return ext["idp.dummy_hash"]


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when password matches. With no stored hash (no such account, or no local
    password) a dummy hash of a random secret is verified: the same work, never a match."""
    dummy = _dummy_hash() if stored_hash is None else None
    try:
        with hashing():
            if dummy is not None:
                hasher().verify(dummy, password)
                return False
            return hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    finally:
        malloc.freed()


def needs_rehash(stored_hash: str) -> bool:
    return hasher().check_needs_rehash(stored_hash)


def policy_errors(
    password: str, username: str | None = None, email: str | None = None
) -> list[str]:
    """Everything wrong with a new password, as messages for the person choosing it: its
    length, too few different characters, a common password or word (ignoring case and
    digits or symbols added at either end), or built on the username or e-mail address."""
    cfg = current_app.config
    lo, hi = cfg["PASSWORD_MIN_LENGTH"], cfg["PASSWORD_MAX_LENGTH"]
    errors = []
    if len(password) < lo:
        errors.append(f"Use at least {lo} characters.")
    if len(password) > hi:
        errors.append(f"Use at most {hi} characters.")
    if weak_passwords.too_little_variety(password):
        errors.append(
            f"This password is too regular to be safe: use at least "
            f"{weak_passwords.MIN_DISTINCT_CHARACTERS} different characters, not a run "
            "like 123456… or abcdef…"
        )
    kind = weak_passwords.listed(password)
    if kind == "password":
        errors.append(
            "This password is among the most common ones (found in leaked password lists, "
            "which attackers try first), even with digits or symbols added. Choose another."
        )
    elif kind == "word":
        errors.append(
            "This password is a common word or name, which attackers try first, even with "
            "digits or symbols added. Choose another, or several words."
        )
    folded = weak_passwords.fold(password)
    local_part = email.rpartition("@")[0] if email else None
    if username and folded == weak_passwords.fold(username):
        errors.append("The password cannot be your username.")
    elif weak_passwords.built_on(password, username, lo):
        errors.append(
            f"The password cannot be built on your username: without it, fewer than {lo} "
            "characters are left."
        )
    if email and folded == weak_passwords.fold(email):
        errors.append("The password cannot be your e-mail address.")
    elif weak_passwords.built_on(password, email, lo) or weak_passwords.built_on(
        password, local_part, lo
    ):
        errors.append(
            f"The password cannot be built on your e-mail address: without it, fewer than "
            f"{lo} characters are left."
        )
    return errors
