"""Passkeys (WebAuthn, with py_webauthn): registration, assertion, one-time challenges and
the sign counter that tells a cloned authenticator.

py_webauthn is imported by the four ceremonies that use it, not with this module: a worker
that never sees a passkey does not hold it (4 MB with pyOpenSSL and cbor2)."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app, session
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from identity import audit
from identity.extensions import db
from identity.models import LinkedIdentity, Passkey, User, WebauthnChallenge
from identity.models.users import utcnow
from identity.sweeps import sweep
from identity.throttle import throttle

log = logging.getLogger("identity.auth")

# The link that lets sign_in() find the account a passkey belongs to (subject: the account's
# WebAuthn user handle, which is its OIDC subject: random, and no personal data).
CONNECTOR = "passkey"
CHALLENGE_LIFETIME = 5 * 60
NAME_MAX = 64
# register: adding one; signin: passwordless; second: the second factor after a first one;
# confirm: a signed-in person proving presence again before a dangerous change.
PURPOSES = ("register", "signin", "second", "confirm")

MALFORMED = "Your browser's answer could not be read. Try again."
STALE = "This passkey request expired or was already used. Try again."
UNKNOWN = "This passkey is not registered here (it may have been removed). Use another way in."
NOT_YOURS = "This passkey belongs to another account."
REFUSED = "The passkey could not be verified. Try again."
CLONED = (
    "This passkey was refused: its signature counter went backwards, which happens when an "
    "authenticator was copied. Use another way in, and tell an administrator."
)


class PasskeyProblem(Exception):
    """A ceremony that failed: `message` for people (the script shows it), `reason` for the
    audit log, `status` the HTTP status of the JSON answer."""

    def __init__(self, reason: str, message: str, status: int = 400, wait: int = 0):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.wait = wait  # seconds before trying again may work (Retry-After), with 429


def rp_id() -> str:
    """The relying party id: the issuer's host (a passkey works for no other site)."""
    return urlsplit(current_app.config["ISSUER"]).hostname or "localhost"


def origin() -> str:
    """The one origin a ceremony may come from: the issuer's."""
    parts = urlsplit(current_app.config["ISSUER"])
    return f"{parts.scheme}://{parts.netloc}"


def of(user: User) -> list[Passkey]:
    """The passkeys of `user`, oldest first."""
    return list(
        db.session.scalars(select(Passkey).where(Passkey.user_id == user.id).order_by(Passkey.id))
    )


def count(user: User) -> int:
    return db.session.scalar(
        select(func.count()).select_from(Passkey).where(Passkey.user_id == user.id)
    )


def amr(passkey: Passkey, user_verified: bool) -> list[str]:
    """RFC 8176 methods of a use of `passkey`: "swk" for a synced passkey (its private key
    lives in a cloud keychain, software-protected), "hwk" for a device-bound one; "user"
    when the authenticator verified the person (PIN or biometrics)."""
    methods = ["swk" if passkey.backup_eligible else "hwk"]
    if user_verified:
        methods.append("user")
    return methods


# -- challenges ----------------------------------------------------------------------------


def _session_key(purpose: str) -> str:
    return f"webauthn_{purpose}"


def new_challenge(purpose: str, user: User | None) -> bytes:
    """A fresh random challenge kept server-side (committed), named in this browser's session
    by a one-time id. Old challenges of anyone are swept here."""
    cutoff = utcnow() - timedelta(seconds=CHALLENGE_LIFETIME)
    sweep(WebauthnChallenge, lambda: (WebauthnChallenge.created_at < cutoff,))
    challenge = secrets.token_bytes(32)
    row_id = secrets.token_urlsafe(16)
    db.session.add(
        WebauthnChallenge(
            id=row_id, challenge=challenge, purpose=purpose, user_id=user.id if user else None
        )
    )
    db.session.commit()
    session[_session_key(purpose)] = row_id
    return challenge


def take_challenge(purpose: str, user: User | None) -> bytes:
    """The challenge this browser was given for `purpose`, spent now: of any number of
    answers to it (a replay, a copied cookie, a concurrent request), one gets it. Raises
    PasskeyProblem when there is none, it was spent, or it is older than the lifetime."""
    row_id = session.pop(_session_key(purpose), None)
    if not isinstance(row_id, str):
        raise PasskeyProblem("no_challenge", STALE)
    row = db.session.get(WebauthnChallenge, row_id)
    won = db.session.execute(
        delete(WebauthnChallenge).where(WebauthnChallenge.id == row_id)
    ).rowcount
    db.session.commit()
    if row is None or won != 1:
        raise PasskeyProblem("replayed_challenge", STALE)
    if row.purpose != purpose or row.user_id != (user.id if user else None):
        raise PasskeyProblem("wrong_challenge", STALE)
    if utcnow() - row.created_at > timedelta(seconds=CHALLENGE_LIFETIME):
        raise PasskeyProblem("expired_challenge", STALE)
    return row.challenge


# -- registration -------------------------------------------------------------------------


def registration_options(user: User) -> str:
    """The options of navigator.credentials.create() as JSON: a discoverable credential
    (resident key) with user verification, none of the account's existing ones again."""
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        PublicKeyCredentialDescriptor,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    options = generate_registration_options(
        rp_id=rp_id(),
        rp_name=rp_id(),
        user_id=user.subject.encode(),
        user_name=user.username,
        user_display_name=user.name or user.username,
        challenge=new_challenge("register", user),
        timeout=CHALLENGE_LIFETIME * 1000,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id)) for p in of(user)
        ],
    )
    return options_to_json(options)


def register(user: User, credential: object, name: str) -> Passkey:
    """Verify the answer of navigator.credentials.create() and keep the passkey (committed),
    with the link that lets it sign in. Raises PasskeyProblem."""
    from webauthn import verify_registration_response
    from webauthn.helpers import bytes_to_base64url, parse_registration_credential_json

    challenge = take_challenge("register", user)
    try:
        parsed = parse_registration_credential_json(credential)
        verified = verify_registration_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp_id(),
            expected_origin=origin(),
            require_user_verification=True,
        )
    except Exception as exc:  # noqa: BLE001  any malformed answer is the person's message
        log.info("passkey registration of %s refused: %s", user.username, exc)
        audit.record("passkey.register_failed", user, reason="invalid")
        db.session.commit()
        raise PasskeyProblem("invalid", REFUSED) from None
    passkey = Passkey(
        user_id=user.id,
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        name=name,
        backup_eligible=verified.credential_device_type.value == "multi_device",
        backed_up=verified.credential_backed_up,
    )
    db.session.add(passkey)
    if not any(link.connector == CONNECTOR for link in user.links):
        db.session.add(LinkedIdentity(user_id=user.id, connector=CONNECTOR, subject=user.subject))
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise PasskeyProblem("duplicate", "This passkey is already registered.", 409) from None
    audit.record("passkey.registered", user, passkey=passkey.id, synced=passkey.backup_eligible)
    db.session.commit()
    return passkey


# -- assertion ----------------------------------------------------------------------------


def authentication_options(purpose: str, user: User | None) -> str:
    """The options of navigator.credentials.get() as JSON. Without `user` (passwordless,
    usernameless): any discoverable passkey, user verification required. With `user` (the
    second factor, a confirmation): only that account's passkeys; a confirmation requires
    user verification too (it stands alone, after no other factor)."""
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

    allow = (
        [PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id)) for p in of(user)]
        if user
        else []
    )
    options = generate_authentication_options(
        rp_id=rp_id(),
        challenge=new_challenge(purpose, user),
        timeout=CHALLENGE_LIFETIME * 1000,
        allow_credentials=allow,
        user_verification=UserVerificationRequirement.PREFERRED
        if purpose == "second"
        else UserVerificationRequirement.REQUIRED,
    )
    return options_to_json(options)


def authenticate(purpose: str, credential: object, user: User | None) -> tuple[Passkey, list[str]]:
    """Verify the answer of navigator.credentials.get() against the challenge of `purpose`:
    the passkey used and its RFC 8176 methods. With `user`, the passkey must be theirs. The
    sign counter must grow (when non-zero): else it is a clone, refused and audited. Raises
    PasskeyProblem (audited); the caller commits nothing more."""
    from webauthn import verify_authentication_response
    from webauthn.helpers import bytes_to_base64url, parse_authentication_credential_json

    challenge = take_challenge(purpose, user)
    try:
        parsed = parse_authentication_credential_json(credential)
        credential_id = bytes_to_base64url(parsed.raw_id)
    except Exception:  # noqa: BLE001
        raise PasskeyProblem("malformed", MALFORMED) from None
    passkey = db.session.scalar(select(Passkey).where(Passkey.credential_id == credential_id))
    owner = db.session.get(User, passkey.user_id) if passkey else None
    # Counted in the account's sign-in lockout (with its wrong passwords and codes) and the
    # address's, like a password: an attacker rotating addresses gets a few forged answers
    # per account and window, then a lock that ends by itself. An unknown credential counts
    # under its own id and against the address.
    account = user or owner
    key = account.username if account else f"passkey:{credential_id}"
    refusal = throttle().signin_begin(key, costly=False)
    if refusal:
        audit.record("passkey.failure", account, reason="locked")
        db.session.commit()
        raise PasskeyProblem("locked", refusal.message, 429, refusal.wait)
    if passkey is None:
        _failed(key, account, "unknown_credential")
        raise PasskeyProblem("unknown_credential", UNKNOWN, 401)
    if user is not None and passkey.user_id != user.id:
        _failed(key, user, "other_account")
        raise PasskeyProblem("other_account", NOT_YOURS, 401)
    handle = parsed.response.user_handle
    if handle is not None and handle != owner.subject.encode():
        _failed(key, owner, "user_handle")
        raise PasskeyProblem("user_handle", REFUSED, 401)
    stored = passkey.sign_count
    try:
        # The counter is checked below, against the database, so that a concurrent use
        # cannot slip between (0 here: the library's own check never refuses).
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp_id(),
            expected_origin=origin(),
            credential_public_key=passkey.public_key,
            credential_current_sign_count=0,
            require_user_verification=purpose != "second",
        )
    except Exception as exc:  # noqa: BLE001
        log.info("passkey assertion for %s refused: %s", owner.username, exc)
        _failed(key, owner, "invalid", passkey=passkey.id)
        raise PasskeyProblem("invalid", REFUSED, 401) from None
    new = verified.new_sign_count
    grows = Passkey.sign_count < new if new or stored else Passkey.sign_count == 0
    won = db.session.execute(
        update(Passkey)
        .where(Passkey.id == passkey.id, grows)
        .values(sign_count=new, last_used_at=utcnow(), backed_up=verified.credential_backed_up)
        .execution_options(synchronize_session=False)
    ).rowcount
    if won != 1:
        db.session.rollback()
        audit.record(
            "passkey.cloned", owner, passkey=passkey.id, stored_count=stored, presented_count=new
        )
        _failed(key, owner, None)
        raise PasskeyProblem("cloned", CLONED, 401)
    # A good answer neither counts nor resets the count (as a right password).
    throttle().signin_release(key)
    audit.record("passkey.used", owner, passkey=passkey.id, purpose=purpose)
    db.session.commit()
    db.session.refresh(passkey)
    return passkey, amr(passkey, verified.user_verified)


def _failed(key: str, account: User | None, reason: str | None, **facts) -> None:
    """A failed answer: audited (`reason`, unless already), counted as a failed sign-in of
    `key` from this address, a lock it caused audited too; committed."""
    if reason:
        audit.record("passkey.failure", account, reason=reason, **facts)
    for scope in throttle().signin_failed(key):
        audit.record("signin.locked", account, reason=f"{scope}_failures", factor="passkey")
    db.session.commit()


# -- the account page ---------------------------------------------------------------------


def clean_name(name: object) -> str | None:
    """A passkey's name as typed, trimmed; None when empty, too long or not printable."""
    if not isinstance(name, str):
        return None
    name = " ".join(name.split())
    if not name or len(name) > NAME_MAX or not name.isprintable():
        return None
    return name


def find(user: User, passkey_id: int) -> Passkey | None:
    """`user`'s passkey `passkey_id` (never another account's)."""
    return db.session.scalar(
        select(Passkey).where(Passkey.id == passkey_id, Passkey.user_id == user.id)
    )


def remove(user: User, passkey: Passkey) -> None:
    """Remove `passkey`; with the last one, its sign-in link goes too (the caller commits)."""
    db.session.delete(passkey)
    db.session.flush()
    if count(user) == 0:
        db.session.execute(
            delete(LinkedIdentity).where(
                LinkedIdentity.user_id == user.id, LinkedIdentity.connector == CONNECTOR
            )
        )
        db.session.expire(user, ["links"])
