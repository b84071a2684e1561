"""The grants: authorization code, refresh token and client credentials, each single use.

The code is single use with S256 PKCE and OpenID Connect's ID token; the refresh token is
rotated and the account checked again. Spending a code or a refresh token is one conditional
UPDATE: a second use revokes the whole grant."""

from __future__ import annotations

import json
import logging
import time

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, UserInfo
from flask import current_app, g, session
from joserfc.jwk import KeySet
from sqlalchemy import bindparam, insert, select, update

from identity import audit
from identity.connectors import ConnectorError, LockedOut
from identity.database import get_alone, read_one, write_alone
from identity.extensions import db
from identity.models import AuthorizationCode, Client, Token, User
from identity.models.oauth import token_digest
from identity.oidc import authorize_rules, keys, recheck
from identity.oidc.claims import (
    client_algorithm,
    issuer,
    session_auth_time,
    user_claims,
)
from identity.oidc.client_rules import CLIENT_AUTH_METHODS, CONFIDENTIAL_AUTH_METHODS
from identity.oidc.tokens import code_grant_id, mark_code_replayed, revoke_grant
from identity.scopes import without_offline_access
from identity.sweeps import sweep

log = logging.getLogger("identity.oidc")

CODE_KEPT = 3600  # seconds a spent or expired code is remembered after it expires

_codes = AuthorizationCode.__table__
# A new code, a transaction of its own; whether an app's code already carried a nonce (read
# outside the request's transaction). Built once.
CODE_INSERT = insert(_codes).returning(_codes.c.id)
NONCE_USED = select(_codes.c.id).where(
    _codes.c.client_id == bindparam("app"), _codes.c.nonce == bindparam("nonce")
)
# Spending a code or a refresh token: one conditional UPDATE each, built once, that answers
# the row it spent (RETURNING) or nothing when another request spent it first.
SPEND_CODE = (
    update(_codes)
    .where(
        _codes.c.code == bindparam("digest"),
        _codes.c.client_id == bindparam("app"),
        _codes.c.used_at.is_(None),
    )
    .values(used_at=bindparam("now"))
    .returning(*_codes.c)
)
_tokens = Token.__table__
SPEND_REFRESH = (
    update(_tokens)
    .where(
        _tokens.c.refresh_token == bindparam("digest"),
        _tokens.c.client_id == bindparam("app"),
        _tokens.c.refresh_token_used_at.is_(None),
        _tokens.c.refresh_token_revoked_at == 0,
        _tokens.c.refresh_token_expires_at > bindparam("now"),
    )
    .values(refresh_token_used_at=bindparam("now"))
    .returning(*_tokens.c)
)


def _spend(statement, digest: str, client: Client):
    """Run SPEND_CODE or SPEND_REFRESH for this digest and app, committed at once (a
    transaction of its own): the row as it was spent, or None when there was nothing to
    spend (or another request won)."""
    params = {"digest": digest, "app": client.client_id, "now": int(time.time())}
    return write_alone(statement, params)


class S256Challenge(CodeChallenge):
    """PKCE with S256 only (`plain` protects nothing the code does not); required for
    public apps already at the authorization request; a challenge in the authorization
    request requires the verifier at the token endpoint, and the reverse (Authlib)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if data.get("code_challenge") and not data.get("code_challenge_method"):
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)
        if grant.request.client.public and not data.get("code_challenge"):
            raise InvalidRequestError(
                "PKCE is required for public clients: send code_challenge with "
                "code_challenge_method=S256"
            )

    def get_authorization_code_challenge(self, authorization_code):
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code):
        return authorization_code.code_challenge_method


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    DEFAULT_RESPONSE_MODE = authorize_rules.DEFAULT_RESPONSE_MODE

    @staticmethod
    def validate_no_multiple_request_parameter(request) -> None:
        authorize_rules.refuse_repeated_parameters(request)

    def validate_authorization_redirect_uri(self, request, client) -> str:
        return authorize_rules.checked_redirect_uri(request, client)

    def validate_authorization_request(self) -> str:
        redirect_uri = super().validate_authorization_request()
        authorize_rules.check_request_features(self, redirect_uri)
        return redirect_uri

    def save_authorization_code(self, code: str, request) -> None:
        data = request.payload.data
        now = int(time.time())
        scope = request.scope or ""
        if not getattr(request, "offline_access", False):
            scope = without_offline_access(scope)  # the view grants it (with consent) or no one
        row = {
            "code": token_digest(code),
            "client_id": request.client.client_id,
            "redirect_uri": request.payload.redirect_uri or "",
            "response_type": request.payload.response_type,
            "scope": scope,
            "nonce": data.get("nonce"),
            "auth_time": session_auth_time(),
            "amr": json.dumps(session.get("amr") or []),
            "code_challenge": data.get("code_challenge"),
            "code_challenge_method": data.get("code_challenge_method"),
            "user_id": request.user.id,
            "sid": session.get("sid"),
            "issued_at": now,
            "expires_at": now + current_app.config["CODE_LIFETIME"],
        }
        # A transaction of its own (on PostgreSQL one round trip: no BEGIN, no COMMIT).
        write_alone(CODE_INSERT, row)
        # Spent and expired codes are kept an hour, so that a replay is recognised (and its
        # grant revoked) while it matters; older ones go (indexed on expires_at).
        sweep(AuthorizationCode, lambda: (AuthorizationCode.expires_at < now - CODE_KEPT,))
        db.session.commit()

    def query_authorization_code(self, code: str, client: Client):
        """Spend the code, atomically: of any number of concurrent redemptions one wins.
        A code spent before is a replay: every token issued from it is revoked."""
        digest = token_digest(code)
        spent = _spend(SPEND_CODE, digest, client)
        if spent is None:
            row = db.session.scalar(
                select(AuthorizationCode).where(
                    AuthorizationCode.code == digest,
                    AuthorizationCode.client_id == client.client_id,
                )
            )
            if row is None:
                return None
            mark_code_replayed(row.id)  # first: see tokens._fence
            revoked = revoke_grant(code_grant_id(row))
            audit.record(
                "token.code_reuse",
                db.session.get(User, row.user_id),
                client_id=client.client_id,
                revoked_tokens=revoked,
            )
            db.session.commit()
            return None
        row = AuthorizationCode(**spent._asdict())  # as it is now; read, never written
        if row.is_expired():
            return None
        return row

    def delete_authorization_code(self, authorization_code) -> None:
        # Kept (spent) until it expires: a second redemption must be recognised as one.
        pass

    def authenticate_user(self, authorization_code):
        user = get_alone(User, authorization_code.user_id)
        if user is None or user.disabled:
            raise InvalidGrantError("The account is disabled.")
        return user


class OpenIDCodeExtension(OpenIDCode):
    def exists_nonce(self, nonce: str, request) -> bool:
        if len(nonce) > 255 or not nonce.isprintable():
            raise InvalidRequestError("'nonce' must be at most 255 printable characters")
        # Authlib validates an authorization request twice (for the consent, then for the
        # response): one query per request is enough.
        known = g.setdefault("idp_nonces", {})
        key = (request.payload.client_id, nonce)
        if key not in known:
            used = read_one(NONCE_USED, {"app": request.payload.client_id, "nonce": nonce})
            known[key] = used is not None
        return known[key]

    def resolve_client_private_key(self, client: Client):
        # A key set of one: joserfc then writes the key's `kid` into the header.
        return KeySet([keys.signing_key(self.get_client_algorithm(client))])

    def get_client_algorithm(self, client: Client) -> str:
        return client_algorithm(client)

    def get_client_claims(self, client: Client) -> dict:
        now = int(time.time())
        return {
            "iss": issuer(),
            "aud": client.client_id,
            "iat": now,
            "exp": now + current_app.config["ID_TOKEN_LIFETIME"],
        }

    def get_authorization_code_claims(self, authorization_code) -> dict:
        claims = super().get_authorization_code_claims(authorization_code)
        if authorization_code.sid:
            claims["sid"] = authorization_code.sid
        return claims

    def encode_id_token(self, token, request):
        # Authlib asks generate_user_info without the app; its `sub` depends on the app.
        # The extension is shared by every request: the app goes on this request's `g`.
        g.idp_id_token_client = request.client
        try:
            return super().encode_id_token(token, request)
        finally:
            g.pop("idp_id_token_client", None)

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        return user_claims(user, scope, g.get("idp_id_token_client"))


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh token is used once

    def issue_token(self, user, refresh_token):
        # The app's scopes may have been narrowed since the sign-in: a refresh gives at most
        # what the app may ask for today.
        scope = self.request.payload.scope or refresh_token.get_scope()
        return self.generate_token(
            user=user,
            scope=self.request.client.get_allowed_scope(scope),
            include_refresh_token=True,
        )

    def authenticate_refresh_token(self, refresh_token: str):
        """Spend the refresh token, atomically. A spent one presented again means it was
        copied: the whole grant (every access and refresh token from the same sign-in) ends."""
        client = self.request.client
        digest = token_digest(refresh_token)
        spent = _spend(SPEND_REFRESH, digest, client)
        if spent is not None:
            row = Token(**spent._asdict())  # as it is now; read, never written
            asked = set((self.request.payload.scope or "").split())
            if not asked <= set(row.get_scope().split()):
                # Checked here, not after (Authlib): a refused scope must not spend the
                # token, whose next use would then be taken for a copy's.
                _give_back(row)
                raise InvalidScopeError("A refresh may ask for what was granted, not more.")
            return row
        row = db.session.scalar(select(Token).where(Token.refresh_token == digest))
        if row is None or row.client_id != client.client_id:
            return None
        if row.refresh_token_used_at:
            revoked = revoke_grant(row.grant_id)
            audit.record(
                "token.refresh_reuse", row.user, client_id=client.client_id, revoked_tokens=revoked
            )
            db.session.commit()
        return None

    def authenticate_user(self, refresh_token: Token):
        """The grant's account, still allowed: not disabled and, when linked to the
        directory, still there and unlocked (identity.oidc.recheck; a leaver is disabled,
        which revokes this grant with the rest). A directory that cannot answer refuses the
        refresh and gives the refresh token back unspent: the app may try again later."""
        user = get_alone(User, refresh_token.user_id)
        if user is None or user.disabled:
            raise InvalidGrantError("The account is disabled.")
        try:
            recheck.check(user)
        except LockedOut:
            db.session.rollback()
            _give_back(refresh_token)
            raise InvalidGrantError(
                "The account is locked in the company directory for now (too many wrong "
                "passwords). The refresh token stays valid for when it unlocks."
            ) from None
        except ConnectorError as exc:
            log.error("directory re-check of %s failed: %s", user.username, exc)
            db.session.rollback()
            _give_back(refresh_token)
            # RFC 6749 5.2 has no "try later" error for the token endpoint (unlike
            # temporarily_unavailable at the authorization endpoint): invalid_grant, and the
            # refresh token stays valid for when the directory answers again.
            raise InvalidGrantError(
                "The company directory is unavailable, so this grant cannot be checked now. "
                "Try again in a few minutes; the refresh token is still valid."
            ) from None
        if user.disabled:
            raise InvalidGrantError("The account is disabled.")
        return user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        pass  # spent in authenticate_refresh_token, before the new one was issued


def _give_back(refresh_token: Token) -> None:
    """Unspend a refresh token this request spent (committed): it stays valid."""
    db.session.execute(
        update(Token)
        .where(
            Token.id == refresh_token.id,
            Token.refresh_token_used_at == refresh_token.refresh_token_used_at,
        )
        .values(refresh_token_used_at=None)
    )
    db.session.commit()


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS
