"""A software passkey for tests without a browser: an ES256 key pair whose public key is stored
as registration stores it, answering navigator.credentials.get() options as an authenticator
would (WebAuthn Level 2, 6.3.3 and 7.2): authenticator data, client data, a real signature.
The ceremonies in a real browser: tests/test_passkeys_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from identity.auth import accounts, passkeys
from identity.extensions import db
from identity.models import LinkedIdentity, Passkey

UP, UV = 0x01, 0x04  # authenticator data flags: user present, user verified


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class SoftPasskey:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.raw_id = secrets.token_bytes(16)
        self.count = 0
        self.handle: bytes | None = None

    @property
    def credential_id(self) -> str:
        return b64url(self.raw_id)

    def cose_public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: x, -3: y})

    def store(self, app, username: str, name: str = "Soft key") -> int:
        """Keep this passkey for `username` (with its sign-in link), as registration does."""
        with app.app_context():
            owner = accounts.find(username)
            self.handle = owner.subject.encode()
            row = Passkey(
                user_id=owner.id,
                credential_id=self.credential_id,
                public_key=self.cose_public_key(),
                sign_count=0,
                name=name,
            )
            db.session.add(row)
            if not db.session.scalar(
                select(LinkedIdentity).where(
                    LinkedIdentity.user_id == owner.id,
                    LinkedIdentity.connector == passkeys.CONNECTOR,
                )
            ):
                db.session.add(
                    LinkedIdentity(
                        user_id=owner.id, connector=passkeys.CONNECTOR, subject=owner.subject
                    )
                )
            db.session.commit()
            return row.id

    def answer(self, options: dict, origin: str, *, verified: bool = True, forged: bool = False):
        """The credential JSON a browser posts for `options` (from .../options); `forged`:
        signed with another key, as someone without the passkey would."""
        self.count += 1
        flags = UP | (UV if verified else 0)
        auth_data = (
            hashlib.sha256(options["rpId"].encode()).digest()
            + bytes([flags])
            + struct.pack(">I", self.count)
        )
        client_data = json.dumps(
            {
                "type": "webauthn.get",
                "challenge": options["challenge"],
                "origin": origin,
                "crossOrigin": False,
            }
        ).encode()
        signer = ec.generate_private_key(ec.SECP256R1()) if forged else self.key
        signature = signer.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": self.credential_id,
            "rawId": self.credential_id,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(self.handle) if self.handle else None,
            },
            "clientExtensionResults": {},
        }
