"""The authorization server: Authlib's grants and endpoints, with our storage and keys.

What is ours, because Authlib leaves it to the application: codes and refresh tokens are
single use through one conditional UPDATE each (a second use revokes the whole grant), PKCE
is S256 only and required for public apps, JWT access tokens carry a `kid` and are recorded
(by `jti`) so that they can be revoked and introspected, and the claims by scope.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
import warnings

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.base import invalid_error_characters
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode, UserInfo
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import Flask, current_app, g, session
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet
from sqlalchemy import bindparam, delete, select, update

from identity import audit
from identity.extensions import db
from identity.models import AuthorizationCode, Client, Token, User
from identity.models.oauth import OFFLINE_ACCESS, token_digest
from identity.oidc import authorize_rules, client_cache, keys, subjects

# RFC 9864 renames "EdDSA" to "Ed25519"; relying parties know the old name, and an admin
# chooses it per app (--id-token-alg), so the warning at every token is noise.
warnings.filterwarnings("ignore", "EdDSA is deprecated via RFC 9864", SecurityWarning)

log = logging.getLogger("identity.oidc")

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
CONFIDENTIAL_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
CODE_KEPT = 3600  # seconds a spent or expired code is remembered after it expires
TOKEN_KEPT = 3600  # seconds a token row is kept after the last moment it could matter
SWEEP_INTERVAL = 60  # seconds between two sweeps of one table, per process
SWEEP_BATCH = 1000  # rows deleted at most per sweep: a short transaction, a short lock


def server() -> AuthorizationServer:
    return current_app.extensions["idp.oauth"]


def issuer() -> str:
    return current_app.config["ISSUER"].rstrip("/")


# -- claims -------------------------------------------------------------------------------


def user_claims(user: User, scope: str, client: Client | None) -> UserInfo:
    """The claims `client` sees about a person, by the scopes it was granted (its `sub`:
    identity.oidc.subjects)."""
    scopes = set(scope.split())
    info = UserInfo(sub=subjects.subject_for(client, user))
    if "profile" in scopes:
        info["preferred_username"] = user.username
        if user.name:
            info["name"] = user.name
    if "email" in scopes and user.email:
        info["email"] = user.email
        info["email_verified"] = bool(user.email_verified)
    if "groups" in scopes:
        info["groups"] = list(user.groups or [])
    return info


def without_offline_access(scope: str) -> str:
    """`scope` without `offline_access` (OpenID Connect Core 11: ignored unless consented)."""
    return " ".join(s for s in scope.split() if s != OFFLINE_ACCESS)


def client_algorithm(client: Client) -> str:
    """The algorithm of the app's ID and logout tokens: its registered one while this
    provider still signs with it, else the first of IDP_SIGNING_ALGORITHMS (logged)."""
    configured = current_app.config["SIGNING_ALGORITHMS"]
    alg = client.client_metadata.get("id_token_signed_response_alg") or configured[0]
    if alg not in configured:
        log.warning(
            "app %s is registered for %s ID tokens, which IDP_SIGNING_ALGORITHMS no longer "
            "lists: signing with %s",
            client.client_id,
            alg,
            configured[0],
        )
        alg = configured[0]
    return alg


def _unverified_claims(token: str) -> dict:
    """The payload of a JWT we just signed ourselves (for its jti and exp)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def verifying_keys() -> KeySet:
    return keys.public_keyset()


# -- grants -------------------------------------------------------------------------------


# Spending a code or a refresh token: one conditional UPDATE each, built once, that answers
# the row it spent (RETURNING) or nothing when another request spent it first.
_codes = AuthorizationCode.__table__
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
        row = AuthorizationCode(
            code=token_digest(code),
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri or "",
            response_type=request.payload.response_type,
            scope=scope,
            nonce=data.get("nonce"),
            auth_time=session_auth_time(),
            amr=json.dumps(session.get("amr") or []),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            user_id=request.user.id,
            sid=session.get("sid"),
            issued_at=now,
            expires_at=now + current_app.config["CODE_LIFETIME"],
        )
        db.session.add(row)
        # Spent and expired codes are kept an hour, so that a replay is recognised (and its
        # grant revoked) while it matters; older ones go (indexed on expires_at).
        sweep(AuthorizationCode, AuthorizationCode.expires_at < now - CODE_KEPT)
        db.session.commit()

    def query_authorization_code(self, code: str, client: Client):
        """Spend the code, atomically: of any number of concurrent redemptions one wins.
        A code spent before is a replay: every token issued from it is revoked."""
        digest = token_digest(code)
        spent = (
            db.session.connection()
            .execute(
                SPEND_CODE,
                {"digest": digest, "app": client.client_id, "now": int(time.time())},
            )
            .first()
        )
        db.session.commit()
        if spent is None:
            row = db.session.scalar(
                select(AuthorizationCode).where(
                    AuthorizationCode.code == digest,
                    AuthorizationCode.client_id == client.client_id,
                )
            )
            if row is None:
                return None
            revoked = revoke_grant(_code_grant_id(row))
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
        user = db.session.get(User, authorization_code.user_id)
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
            known[key] = (
                db.session.scalar(
                    select(AuthorizationCode.id).where(
                        AuthorizationCode.client_id == request.payload.client_id,
                        AuthorizationCode.nonce == nonce,
                    )
                )
                is not None
            )
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
        spent = (
            db.session.connection()
            .execute(
                SPEND_REFRESH,
                {"digest": digest, "app": client.client_id, "now": int(time.time())},
            )
            .first()
        )
        db.session.commit()
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
        from identity.connectors import ConnectorError
        from identity.oidc import recheck

        user = db.session.get(User, refresh_token.user_id)
        if user is None or user.disabled:
            raise InvalidGrantError("The account is disabled.")
        try:
            recheck.check(user)
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


# -- tokens -------------------------------------------------------------------------------


class AccessTokenGenerator(JWTBearerTokenGenerator):
    """RFC 9068 access tokens (`typ: at+jwt`), signed with the current key (imported once
    per process, see keys.signing_key)."""

    def get_jwks(self):
        return KeySet([keys.signing_key(self.alg)])

    def get_extra_claims(self, client, grant_type, user, scope):
        # The person's `sub` as this app knows it (pairwise or public).
        return {"sub": subjects.subject_for(client, user)} if user else {}


def _expires_in(client, grant_type: str) -> int:
    return current_app.config["ACCESS_TOKEN_LIFETIME"]


def _refresh_token(client, grant_type, user, scope) -> str:
    return secrets.token_urlsafe(32)


def sweep(model, *conditions) -> int:
    """Delete at most SWEEP_BATCH rows of `model` matching `conditions`, in the caller's
    transaction, at most once every SWEEP_INTERVAL seconds per process and table (looked for
    on the hot path, but not at every request); a full batch makes the next call sweep again.
    Returns how many rows went."""
    sweeps = current_app.extensions.setdefault("idp.sweeps", {})
    if time.monotonic() < sweeps.get(model.__tablename__, 0.0):
        return 0
    ids = select(model.id).where(*conditions).limit(SWEEP_BATCH)
    # A subquery of ids: DELETE ... LIMIT is neither standard nor in PostgreSQL.
    deleted = db.session.execute(
        delete(model)
        .where(model.id.in_(ids.scalar_subquery()))
        .execution_options(synchronize_session=False)
    ).rowcount
    sweeps[model.__tablename__] = (
        0.0 if deleted >= SWEEP_BATCH else time.monotonic() + SWEEP_INTERVAL
    )
    return deleted


def prunable_tokens(now: int) -> tuple:
    """The conditions of a token row that can no longer matter (TOKEN_KEPT after): its
    access token expired; its refresh token, if any, expired or revoked (a spent one stays
    until it expires: presenting it again must still revoke the grant); and, with a `sid`,
    the SSO session it belongs to is over, so that a sign-out still finds every app of the
    session to send a back-channel logout to. What happened is in the audit log."""
    cutoff = now - TOKEN_KEPT
    return (
        Token.issued_at < cutoff,  # implied by the next one; lets the database narrow first
        Token.issued_at + Token.expires_in < cutoff,
        Token.refresh_token.is_(None)
        | (Token.refresh_token_expires_at < cutoff)
        | ((Token.refresh_token_revoked_at > 0) & (Token.refresh_token_revoked_at < cutoff)),
        Token.sid.is_(None) | (Token.issued_at + current_app.config["SESSION_LIFETIME"] < cutoff),
    )


def _code_grant_id(code: AuthorizationCode) -> str:
    return f"code-{code.id}"


# One statement, compiled once; the values are parameters of each execution.
TOKEN_INSERT = Token.__table__.insert()


def save_token(token: dict, request) -> None:
    """Record a token response: the access token's jti, the refresh token's digest, and the
    grant it belongs to."""
    now = int(time.time())
    claims = _unverified_claims(token["access_token"])
    code = getattr(request, "authorization_code", None)
    previous = getattr(request, "refresh_token", None)
    if code is not None:
        grant_id, sid, auth_time = _code_grant_id(code), code.sid, code.auth_time
    elif previous is not None:
        grant_id, sid, auth_time = previous.grant_id, previous.sid, previous.auth_time
    else:
        grant_id, sid, auth_time = f"cc-{secrets.token_hex(8)}", None, None
    refresh = token.get("refresh_token")
    scope = token.get("scope", "")
    # Core INSERTs: nothing reads these rows back in this request, and the ORM's unit of work
    # for two new objects cost more than the writes themselves.
    db.session.connection().execute(
        TOKEN_INSERT,
        {
            "client_id": request.client.client_id,
            "token_type": token["token_type"],
            "access_token": claims["jti"],
            "refresh_token": token_digest(refresh) if refresh else None,
            "scope": scope,
            "issued_at": now,
            "expires_in": token["expires_in"],
            "user_id": request.user.id if request.user else None,
            "grant_id": grant_id,
            "sid": sid,
            "auth_time": auth_time,
            "refresh_token_expires_at": (
                now + current_app.config["REFRESH_TOKEN_LIFETIME"] if refresh else None
            ),
        },
    )
    sweep(Token, *prunable_tokens(now))
    audit.insert(
        # A refresh is its own event: the grant goes on, no one signed in again.
        "token.refreshed" if previous is not None else "token.issued",
        request.user if request.user else None,
        client_id=request.client.client_id,
        grant_type=request.payload.grant_type,
        scope=scope,
        refresh=bool(refresh),
    )
    db.session.commit()


def revoke_grant(grant_id: str) -> int:
    """Revoke every token of one grant (the caller commits)."""
    return revoke_tokens(Token.grant_id == grant_id)


def revoke_tokens(*conditions) -> int:
    """Revoke the tokens matching `conditions` that are not revoked yet (the caller commits).

    The rows are locked in id order first: concurrent revocations of one grant (the losers
    of a refresh-token race all revoke it) otherwise deadlock on PostgreSQL."""
    now = int(time.time())
    ids = db.session.scalars(
        select(Token.id)
        .where(
            *conditions,
            (Token.access_token_revoked_at == 0) | (Token.refresh_token_revoked_at == 0),
        )
        .order_by(Token.id)
        .with_for_update()
    ).all()
    if not ids:
        return 0
    return db.session.execute(
        update(Token)
        .where(Token.id.in_(ids))
        .values(access_token_revoked_at=now, refresh_token_revoked_at=now)
    ).rowcount


def session_auth_time() -> int:
    """When this session's person proved who they are: for a session restored from a
    remember-me cookie, the sign-in the cookie remembers (OpenID Connect Core 2, auth_time)."""
    return int(session.get("auth_time") or time.time())


# -- validating our own tokens ---------------------------------------------------------------


def decode(token_string: str, *, typ: str) -> dict | None:
    """The claims of a JWT of type `typ` (RFC 8725 3.11: every read says which kind of token
    it expects, so that one kind is never taken for another) signed by one of our published
    keys with one of our algorithms (never `none` nor HMAC), issued by us; None for anything
    else. Expiry is the caller's."""
    try:
        decoded = jwt.decode(
            token_string,
            verifying_keys(),
            algorithms=list(current_app.config["SIGNING_ALGORITHMS"]),
        )
    except (JoseError, ValueError, TypeError):
        return None
    if decoded.claims.get("iss") != issuer():
        return None
    if decoded.header.get("typ") != typ:
        return None
    return decoded.claims


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


# Asked at every userinfo call: built once (with its account, joined).
TOKEN_BY_JTI = select(Token).where(Token.access_token == bindparam("jti"))


def access_token_row(token_string: str) -> Token | None:
    """The recorded access token behind a JWT access token of ours."""
    claims = decode(token_string, typ="at+jwt")
    if claims is None or not isinstance(claims.get("jti"), str):
        return None
    return db.session.scalar(TOKEN_BY_JTI, {"jti": claims["jti"]})


class AccessTokenValidator(BearerTokenValidator):
    """Our access tokens at our own endpoints: signature, issuer, then the recorded row, so
    that a revoked token is refused at once (Authlib checks expiry, revocation, scope)."""

    def authenticate_token(self, token_string: str) -> Token | None:
        return access_token_row(token_string)


def _token_from_string(token_string: str, hint: str | None) -> Token | None:
    """A token we issued, by its string: a JWT access token (verified, then found by jti) or
    a refresh token (found by digest)."""
    if token_string.count(".") == 2:
        return access_token_row(token_string) if hint != "refresh_token" else None
    if hint == "access_token":
        return None
    return db.session.scalar(select(Token).where(Token.refresh_token == token_digest(token_string)))


class PresentedToken:
    """The token one introspection request presented: its row and which of the row's two
    tokens it is, each with its own state (RFC 7662 2.2: a refresh token is active while
    /token accepts it, whatever became of the access token issued with it).

    Made per request: Authlib's endpoint objects are shared by every request and thread."""

    def __init__(self, row: Token, refresh: bool):
        self.row = row
        self.refresh = refresh

    def is_expired(self) -> bool:
        if self.refresh:
            return (self.row.refresh_token_expires_at or 0) <= time.time()
        return self.row.is_expired()

    def is_revoked(self) -> bool:
        if self.refresh:
            # A spent (rotated) refresh token is refused by /token: not active either.
            return bool(self.row.refresh_token_revoked_at or self.row.refresh_token_used_at)
        return self.row.is_revoked()


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def query_token(self, token_string, token_type_hint):
        row = _token_from_string(token_string, token_type_hint)
        if row is None:
            return None
        refresh = row.refresh_token is not None and row.refresh_token == token_digest(token_string)
        return PresentedToken(row, refresh)

    def check_permission(self, token: PresentedToken, client: Client, request) -> bool:
        # An app learns about its own tokens only.
        return token.row.client_id == client.client_id

    def introspect_token(self, token: PresentedToken) -> dict:
        # Authlib answered {"active": false} already for an expired or revoked token.
        row = token.row
        user = db.session.get(User, row.user_id) if row.user_id else None
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
        (RFC 7009 2.1)."""
        if token.refresh_token and token.refresh_token == token_digest(request.form["token"]):
            count = revoke_grant(token.grant_id)
        else:
            now = int(time.time())
            token.access_token_revoked_at = now
            count = 1
        audit.record("token.revoked", token.user, client_id=token.client_id, tokens=count)
        db.session.commit()


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


# -- wiring -------------------------------------------------------------------------------


class Server(AuthorizationServer):
    def get_authorization_grant(self, request):
        """Authlib's, except that a response_type no error description can repeat (RFC 6749
        5.2: printable ASCII, no quote or backslash) is refused without repeating it."""
        if invalid_error_characters(request.payload.response_type or ""):
            raise InvalidRequestError("'response_type' must be 'code'.")
        return super().get_authorization_grant(request)


class Issuer(IssuerParameter):
    def get_issuer(self) -> str:
        return issuer()


def init_app(app: Flask) -> AuthorizationServer:
    """One authorization server per app (its settings and keys are the app's)."""

    def query_client(client_id: str) -> Client | None:
        if not client_id or len(client_id) > 48 or not client_id.isprintable():
            return None  # PostgreSQL refuses NUL in a string: never ask it
        return client_cache.lookup(client_id)

    client_cache.init_app(app)
    authorization = Server(
        app, query_client=query_client, save_token=lambda token, request: save_token(token, request)
    )
    from identity.oidc.clients import SCOPES

    authorization.scopes_supported = list(SCOPES)
    generator = AccessTokenGenerator(
        issuer=app.config["ISSUER"].rstrip("/"),
        alg=app.config["SIGNING_ALGORITHMS"][0],
        refresh_token_generator=_refresh_token,
        expires_generator=_expires_in,
    )
    authorization.register_token_generator("default", generator)
    authorization.register_grant(
        AuthorizationCodeGrant, [S256Challenge(required=True), OpenIDCodeExtension()]
    )
    authorization.register_grant(RefreshTokenGrant)
    authorization.register_grant(ClientCredentialsGrant)
    authorization.register_endpoint(Introspection)
    authorization.register_endpoint(Revocation)
    authorization.register_endpoint(EndSession)
    issuer_parameter = Issuer()
    authorization.register_extension(issuer_parameter)
    protector = ResourceProtector()
    protector.register_token_validator(AccessTokenValidator())
    app.extensions["idp.oauth"] = authorization
    app.extensions["idp.oauth.protector"] = protector
    app.extensions["idp.oauth.issuer_parameter"] = issuer_parameter
    return authorization
