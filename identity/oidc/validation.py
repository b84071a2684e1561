"""Our own tokens presented back to us, and the endpoints that read them.

JWTs checked (signature, algorithm, issuer, `typ`), ID token hints, access tokens at our
endpoints, and the introspection, revocation and end-session endpoints."""

from __future__ import annotations

import time
from types import SimpleNamespace

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from identity import audit
from identity.database import read_one
from identity.extensions import db
from identity.models import Client, Token, User
from identity.models.oauth import token_digest
from identity.oidc import client_cache, keys, subjects
from identity.oidc.claims import issuer
from identity.oidc.client_rules import CLIENT_AUTH_METHODS, CONFIDENTIAL_AUTH_METHODS
from identity.oidc.tokens import APP_TOKEN_JTI, revoke_grant, sweep_tokens


def verifying_keys() -> KeySet:
    return keys.public_keyset()


# Tokens verified per key set, at most (a flood of distinct tokens starts the memo again).
VERIFIED_MAX = 2000


def decode(token_string: str, *, typ: str) -> dict | None:
    """The claims of a JWT of type `typ` (RFC 8725 3.11: every read says which kind of token
    it expects, so that one kind is never taken for another) signed by one of our published
    keys with one of our algorithms (never `none` nor HMAC), issued by us; None for anything
    else. Expiry is the caller's. A token verified with the current key set is not verified
    again (keys.verified_tokens); only verified ones are remembered."""
    verified = keys.verified_tokens()
    known = verified.get(token_string)
    if known is None:
        try:
            decoded = jwt.decode(
                token_string,
                verifying_keys(),
                algorithms=list(current_app.config["SIGNING_ALGORITHMS"]),
            )
        except (JoseError, ValueError, TypeError):
            return None
        if len(verified) >= VERIFIED_MAX:
            verified.clear()
        known = verified[token_string] = (decoded.header, decoded.claims)
    header, claims = known
    if claims.get("iss") != issuer():
        return None
    if header.get("typ") != typ:
        return None
    return dict(claims)


ID_TOKEN_TYP = "JWT"  # what joserfc writes in the ID tokens Authlib makes (never at+jwt)
# Claims that mark one of our other JWTs: access tokens (RFC 9068) and logout tokens.
NOT_ID_TOKEN_CLAIMS = ("scope", "client_id", "events")


def id_token_hint_claims(token_string: str) -> dict | None:
    """The claims of an ID token this provider issued to one of its apps, expired or not (a
    hint may be old); None for anything else, our access and logout tokens included (RFC 8725
    3.11: told apart by `typ`, and by claims an ID token never carries)."""
    claims = decode(token_string, typ=ID_TOKEN_TYP)
    if claims is None or any(name in claims for name in NOT_ID_TOKEN_CLAIMS):
        return None
    aud, sub = claims.get("aud"), claims.get("sub")
    if not isinstance(aud, str) or not isinstance(sub, str) or client_cache.lookup(aud) is None:
        return None
    return claims


# Our tokens as introspection and userinfo read them: one Core statement (built once) for the
# token's row and its account's claims, instead of an ORM load of both (about half the cost).
_tokens, _users = Token.__table__, User.__table__
_RECORD = select(
    _tokens.c.client_id,
    _tokens.c.scope,
    _tokens.c.issued_at,
    _tokens.c.expires_in,
    _tokens.c.access_token,
    _tokens.c.access_token_revoked_at,
    _tokens.c.refresh_token,
    _tokens.c.refresh_token_expires_at,
    _tokens.c.refresh_token_revoked_at,
    _tokens.c.refresh_token_used_at,
    _tokens.c.user_id,
    _users.c.username,
    _users.c.subject,
    _users.c.name,
    _users.c.email,
    _users.c.email_verified,
    _users.c.groups,
    _users.c.disabled,
).select_from(_tokens.outerjoin(_users, _users.c.id == _tokens.c.user_id))
RECORD_BY_JTI = _RECORD.where(_tokens.c.access_token == bindparam("jti"))
RECORD_BY_REFRESH = _RECORD.where(_tokens.c.refresh_token == bindparam("digest"))


class TokenRecord:
    """A recorded token, read only: its row's values and its account's claims (`user`, None
    for an app's own token or an account since deleted), with what Authlib asks of a token."""

    def __init__(self, row):
        self.row = row
        self.client_id, self.scope = row.client_id, row.scope
        self.user = (
            SimpleNamespace(
                id=row.user_id,
                username=row.username,
                subject=row.subject,
                name=row.name,
                email=row.email,
                email_verified=row.email_verified,
                groups=row.groups,
                disabled=row.disabled,
            )
            if row.subject is not None
            else None
        )

    def is_expired(self) -> bool:
        return self.row.issued_at + self.row.expires_in <= time.time()

    def is_revoked(self) -> bool:
        return bool(self.row.access_token_revoked_at)

    def get_scope(self) -> str:
        return self.scope


def access_token_claims(token_string: str) -> dict | None:
    """The verified claims of a JWT access token of ours (RFC 9068 `at+jwt`) with a jti."""
    claims = decode(token_string, typ="at+jwt")
    if claims is None or not isinstance(claims.get("jti"), str):
        return None
    return claims


def access_token_record(token_string: str) -> TokenRecord | None:
    """The recorded access token behind a JWT access token of ours, read only; for an app's
    own token, unrecorded unless revoked, what its claims say."""
    claims = access_token_claims(token_string)
    if claims is None:
        return None
    row = read_one(RECORD_BY_JTI, {"jti": claims["jti"]})
    if row is None:
        app_token = _app_token(claims)
        return TokenRecord(_app_token_row(app_token)) if app_token is not None else None
    return TokenRecord(row)


def access_token_row(token_string: str) -> Token | None:
    """The recorded access token behind a JWT access token of ours, to change (revoke); for
    an app's own token never recorded, a new row (not yet added to the session)."""
    claims = access_token_claims(token_string)
    if claims is None:
        return None
    row = db.session.scalar(select(Token).where(Token.access_token == claims["jti"]))
    if row is None:
        app_token = _app_token(claims)
        return Token(**_app_token_columns(app_token)) if app_token is not None else None
    return row


def _app_token(claims: dict) -> dict | None:
    """The claims of an app's own token (tokens.APP_TOKEN_JTI) issued to an app that still
    exists (deleting an app ends its tokens), else None."""
    if not claims["jti"].startswith(APP_TOKEN_JTI):
        return None
    client_id, iat, exp = claims.get("client_id"), claims.get("iat"), claims.get("exp")
    if not isinstance(client_id, str) or client_cache.lookup(client_id) is None:
        return None
    if not isinstance(iat, int) or not isinstance(exp, int):
        return None
    return claims


def _app_token_columns(claims: dict) -> dict:
    """The row an app's own token would have, had it been recorded when issued."""
    return {
        "client_id": claims["client_id"],
        "token_type": "Bearer",
        "scope": claims.get("scope") or "",
        "issued_at": claims["iat"],
        "expires_in": claims["exp"] - claims["iat"],
        "access_token": claims["jti"],
        "grant_id": claims["jti"],
    }


def _app_token_row(claims: dict) -> SimpleNamespace:
    """_app_token_columns, read as RECORD_BY_JTI reads a row: not revoked, no account."""
    return SimpleNamespace(
        **_app_token_columns(claims),
        access_token_revoked_at=0,
        refresh_token=None,
        refresh_token_expires_at=None,
        refresh_token_revoked_at=0,
        refresh_token_used_at=None,
        user_id=None,
        **dict.fromkeys(("username", "subject", "name", "email", "email_verified", "groups")),
        disabled=None,
    )


class AccessTokenValidator(BearerTokenValidator):
    """Our access tokens at our own endpoints: signature, issuer, then the recorded row, so
    that a revoked token is refused at once (Authlib checks expiry, revocation, scope)."""

    def authenticate_token(self, token_string: str) -> TokenRecord | None:
        return access_token_record(token_string)


def _token_from_string(token_string: str, hint: str | None) -> Token | None:
    """A token we issued, by its string, to change: a JWT access token (verified, then found
    by jti) or a refresh token (found by digest)."""
    if token_string.count(".") == 2:
        return access_token_row(token_string) if hint != "refresh_token" else None
    if hint == "access_token":
        return None
    return db.session.scalar(select(Token).where(Token.refresh_token == token_digest(token_string)))


def _record_from_string(token_string: str, hint: str | None) -> TokenRecord | None:
    """_token_from_string, read only (introspection)."""
    if token_string.count(".") == 2:
        return access_token_record(token_string) if hint != "refresh_token" else None
    if hint == "access_token":
        return None
    row = read_one(RECORD_BY_REFRESH, {"digest": token_digest(token_string)})
    return TokenRecord(row) if row is not None else None


class PresentedToken:
    """The token one introspection request presented: its record and which of the record's
    two tokens it is, each with its own state (RFC 7662 2.2: a refresh token is active while
    /token accepts it, whatever became of the access token issued with it).

    Made per request: Authlib's endpoint objects are shared by every request and thread."""

    def __init__(self, record: TokenRecord, refresh: bool):
        self.record = record
        self.refresh = refresh

    def is_expired(self) -> bool:
        if self.refresh:
            return (self.record.row.refresh_token_expires_at or 0) <= time.time()
        return self.record.is_expired()

    def is_revoked(self) -> bool:
        row = self.record.row
        if self.refresh:
            # A spent (rotated) refresh token is refused by /token: not active either.
            return bool(row.refresh_token_revoked_at or row.refresh_token_used_at)
        return self.record.is_revoked()


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def query_token(self, token_string, token_type_hint):
        record = _record_from_string(token_string, token_type_hint)
        if record is None:
            return None
        digest = record.row.refresh_token
        return PresentedToken(record, digest is not None and digest == token_digest(token_string))

    def check_permission(self, token: PresentedToken, client: Client, request) -> bool:
        # An app learns about its own tokens only.
        return token.record.client_id == client.client_id

    def introspect_token(self, token: PresentedToken) -> dict:
        # Authlib answered {"active": false} already for an expired or revoked token.
        row, user = token.record.row, token.record.user
        if row.user_id and (user is None or user.disabled):
            return {"active": False}
        body = {
            "active": True,
            "client_id": row.client_id,
            "token_type": "refresh_token" if token.refresh else "Bearer",
            "scope": row.scope,
            "iss": issuer(),
            "exp": row.refresh_token_expires_at
            if token.refresh
            else row.issued_at + row.expires_in,
            "iat": row.issued_at,
            "sub": (
                subjects.subject_for(client_cache.lookup(row.client_id), user)
                if user
                else row.client_id
            ),
        }
        if not token.refresh:
            body["jti"] = row.access_token
        if user:
            body["username"] = user.username
        return body


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def query_token(self, token_string, token_type_hint):
        return _token_from_string(token_string, token_type_hint)

    def revoke_token(self, token: Token, request) -> None:
        """Revoking a refresh token ends its grant; revoking an access token ends that token
        (RFC 7009 2.1). An app's own token gets its row now, revoked."""
        if token.refresh_token and token.refresh_token == token_digest(request.form["token"]):
            count = revoke_grant(token.grant_id)
        else:
            now = int(time.time())
            token.access_token_revoked_at = now
            if token.id is None:  # an app's own token: its first row
                db.session.add(token)
                sweep_tokens(now)
            count = 1
        audit.record("token.revoked", token.user, client_id=token.client_id, tokens=count)
        try:
            db.session.commit()
        except IntegrityError:
            # Another revocation of the same app token wrote its row first: revoked either way.
            db.session.rollback()


class EndSession(EndSessionEndpoint):
    def get_server_jwks(self):
        return verifying_keys()

    def get_algorithms(self) -> list[str]:
        return list(current_app.config["SIGNING_ALGORITHMS"])

    def validate_request(self, request):
        hint = request.payload.data.get("id_token_hint")
        if hint and id_token_hint_claims(hint) is None:
            raise InvalidRequestError("'id_token_hint' is not an ID token from this provider")
        validated = super().validate_request(request)
        claims = validated.id_token_claims
        if claims is not None and claims.get("iss") != issuer():
            raise InvalidRequestError("'id_token_hint' was not issued by this provider")
        if request.payload.data.get("client_id") and validated.client is None:
            raise InvalidRequestError("unknown 'client_id'")
        return validated

    def end_session(self, end_session_request) -> None:
        pass  # the view then signs out (auth.signin.sign_out), which ends the SSO session
