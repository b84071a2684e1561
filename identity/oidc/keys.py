"""Token signing keys (joserfc): made on first use, encrypted at rest, rotated so that a key is
published before it signs and stays published after, imported once per process."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import click
from cryptography.fernet import Fernet, InvalidToken
from flask import current_app
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from sqlalchemy import delete, select

from identity import audit
from identity.cli import Group
from identity.extensions import db
from identity.models import SigningKey
from identity.models.users import utcnow
from identity.secretbox import fernet

log = logging.getLogger("identity.keys")

GENERATORS = {
    "RS256": lambda: RSAKey.generate_key(2048),
    "ES256": lambda: ECKey.generate_key("P-256"),
    "EdDSA": lambda: OKPKey.generate_key("Ed25519"),
}
IMPORTERS = {"RS256": RSAKey, "ES256": ECKey, "EdDSA": OKPKey}

# Which key is current, per algorithm, is remembered for a few seconds instead of a query per
# token. Safe: after a rotation elsewhere, the key still used here is retired but published.
CURRENT_TTL = 10.0
# The /jwks.json document is built again after this many seconds (see jwks_json).
JWKS_TTL = 5.0


def _cache() -> dict:
    """Per app: private keys decrypted and imported once (an RSA import costs ~70 ms), and
    the current key per algorithm with its deadline."""
    return current_app.extensions.setdefault(
        "idp.signing_keys", {"private": {}, "current": {}, "lock": threading.Lock()}
    )


class KeyDecryptionError(Exception):
    """The stored keys cannot be decrypted with the configured secret."""


def _fernet() -> Fernet:
    return fernet(b"identity signing keys v1")


def _new_key(alg: str, state: str) -> SigningKey:
    key = GENERATORS[alg]()
    kid = key.thumbprint()
    public = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
    pem = key.as_pem(private=True)
    now = utcnow()
    row = SigningKey(
        kid=kid,
        alg=alg,
        state=state,
        public_jwk=public,
        private_key=_fernet().encrypt(pem).decode(),
        activated_at=now if state == "current" else None,
    )
    db.session.add(row)
    return row


def ensure_keys() -> list[SigningKey]:
    """Make sure each configured algorithm has a current and a next key; return new ones."""
    made = []
    rows = db.session.scalars(select(SigningKey).where(SigningKey.state.in_(("current", "next"))))
    have = {(r.alg, r.state) for r in rows}
    for alg in current_app.config["SIGNING_ALGORITHMS"]:
        for state in ("current", "next"):
            if (alg, state) not in have:
                made.append(_new_key(alg, state))
    if made:
        audit.record("keys.created", None, kids=[r.kid for r in made])
        db.session.commit()
        _forget_published()
    return made


def rotate(by: str | None = None) -> list[dict]:
    """Per algorithm: next becomes current (apps have seen it in the JWKS already), current
    is retired but stays published for KEY_RETENTION, and a new next key is published.
    Retired keys past their time are removed."""
    ensure_keys()
    now = utcnow()
    retention = timedelta(seconds=current_app.config["KEY_RETENTION"])
    changes = []
    for alg in current_app.config["SIGNING_ALGORITHMS"]:
        rows = db.session.scalars(select(SigningKey).where(SigningKey.alg == alg)).all()
        for row in rows:
            if row.state == "current":
                row.state, row.retired_at, row.expires_at = "retired", now, now + retention
                changes.append({"kid": row.kid, "alg": alg, "now": "retired"})
        for row in rows:
            if row.state == "next":
                row.state, row.activated_at = "current", now
                changes.append({"kid": row.kid, "alg": alg, "now": "current"})
        fresh = _new_key(alg, "next")
        changes.append({"kid": fresh.kid, "alg": alg, "now": "next"})
    db.session.flush()
    removed = db.session.execute(
        delete(SigningKey).where(SigningKey.state == "retired", SigningKey.expires_at <= now)
    ).rowcount
    audit.record("keys.rotated", None, changes=changes, removed=removed, by=by or "cli")
    db.session.commit()
    _cache()["current"].clear()  # this process signs with the new keys at once
    _forget_published()
    return changes


def _forget_published() -> None:
    """This process publishes and verifies with the keys as they are now."""
    _cache().pop("public", None)
    _cache().pop("jwks", None)


def published() -> list[SigningKey]:
    now = utcnow()
    rows = db.session.scalars(select(SigningKey).order_by(SigningKey.id)).all()
    return [r for r in rows if r.state != "retired" or (r.expires_at and r.expires_at > now)]


def jwks() -> dict:
    """The public keys apps verify tokens with: next, current and not yet expired retired."""
    return {"keys": [r.public_jwk for r in published()]}


def jwks_json() -> bytes:
    """The /jwks.json document as served, built at most once per JWKS_TTL seconds (at once
    after a rotation in this process), with no query in between: the document changes only
    when keys are added, and a key is published one rotation before it signs. So a document
    a few seconds old still holds every key signing anywhere: after a rotation in another
    process, the new current key is that process's former next key, published already; the
    new next key appears here within JWKS_TTL, long before a rotation makes it sign (apps
    themselves cache the document for 300 s). A retired key may stay listed JWKS_TTL past
    its time: more keys published, never fewer."""
    cache = _cache()
    cached = cache.get("jwks")
    now = time.monotonic()
    if cached and now < cached[0]:
        return cached[1]
    ensure_keys()  # first start: publish keys before anything is signed with them
    body = current_app.json.response({"keys": [r.public_jwk for r in published()]}).get_data()
    cache["jwks"] = (now + JWKS_TTL, body)
    return body


def signing_key(alg: str = "RS256"):
    """The current private key for `alg`, as a joserfc key (imported once per process)."""
    if alg not in current_app.config["SIGNING_ALGORITHMS"]:
        raise ValueError(f"{alg} is not one of IDP_SIGNING_ALGORITHMS")
    cache = _cache()
    cached = cache["current"].get(alg)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    row = db.session.scalar(
        select(SigningKey)
        .where(SigningKey.alg == alg, SigningKey.state == "current")
        .order_by(SigningKey.id.desc())
    )
    if row is None:
        ensure_keys()
        return signing_key(alg)
    with cache["lock"]:
        key = cache["private"].get(row.kid)
        if key is None:
            try:
                pem = _fernet().decrypt(row.private_key.encode())
            except InvalidToken:
                raise KeyDecryptionError(
                    "the signing keys cannot be decrypted: IDP_KEY_ENCRYPTION_KEY (or "
                    "IDP_SECRET_KEY when it is unset) is not the one they were stored with"
                ) from None
            key = IMPORTERS[alg].import_key(pem, parameters={"kid": row.kid, "alg": alg})
            cache["private"][row.kid] = key
    cache["current"][alg] = (time.monotonic() + CURRENT_TTL, key)
    return key


def public_keyset() -> KeySet:
    """The published keys, for verifying our own tokens; re-read every CURRENT_TTL seconds.
    Safe across processes: a key is published one rotation before anything is signed with it."""
    return _public()[1]


def verified_tokens() -> dict:
    """Tokens whose signature public_keyset() verified, by their exact text: a dict that lives
    as long as that key set (CURRENT_TTL, or until a rotation here), so that a token is
    verified once per key set however often it is presented (an app asks introspection and
    userinfo about one token many times). A key no longer published ends its entries."""
    return _public()[2]


def _public() -> tuple:
    cache = _cache()
    cached = cache.get("public")
    if cached and cached[0] > time.monotonic():
        return cached
    published_keys = jwks()
    if not published_keys["keys"]:
        ensure_keys()  # first start: nothing signed yet, but verifying must not fail
        published_keys = jwks()
    keyset = KeySet.import_key_set(published_keys)
    cache["public"] = (time.monotonic() + CURRENT_TTL, keyset, {})
    return cache["public"]


keys_cli = Group("keys", help="Token signing keys.")


@keys_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(as_json: bool) -> None:
    """List signing keys: next (published), current (signing), retired (published until
    expiry)."""
    import json

    ensure_keys()
    rows = published()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r.as_dict()))
        return
    click.echo(f"{'KID':<45} {'ALG':<6} {'STATE':<8} {'ACTIVATED':<21} EXPIRES")
    for r in rows:
        d = r.as_dict()
        click.echo(
            f"{r.kid:<45} {r.alg:<6} {r.state:<8} {d['activated_at'] or '-':<21} "
            f"{d['expires_at'] or '-'}"
        )


@keys_cli.command("rotate")
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
def rotate_command(as_json: bool) -> None:
    """Start signing with the published next keys; publish new next keys."""
    import json

    changes = rotate()
    if as_json:
        click.echo(json.dumps(changes))
        return
    for c in changes:
        click.echo(f"{c['alg']:<6} {c['kid']} is now {c['now']}")
