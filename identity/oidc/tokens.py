"""Tokens issued, recorded, revoked and pruned.

RFC 9068 JWT access tokens and rotating refresh tokens, each recorded (by `jti`, by digest)
with the grant it belongs to, revoked by grant or by condition, and which spent rows may go
(pruned by identity.sweeps).

An app's own tokens (the client credentials grant) are not recorded: no person, no refresh
token, no grant to revoke with them, and an app may ask for one per call. Their `jti` says
what they are (APP_TOKEN_JTI); a row is written only when one is revoked (RFC 7009), and
deleting the app ends them (introspection and userinfo accept tokens of known apps only)."""

from __future__ import annotations

import base64
import json
import secrets
import time

from authlib.oauth2.rfc6749.errors import InvalidGrantError
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from flask import current_app
from joserfc.jwk import KeySet
from sqlalchemy import bindparam, func, insert, select, update

from identity import audit
from identity.database import write_alone
from identity.extensions import db
from identity.models import AuthorizationCode, Event, Token
from identity.models.oauth import token_digest
from identity.models.users import utcnow
from identity.oidc import keys, subjects
from identity.sweeps import sweep

TOKEN_KEPT = 3600  # seconds a token row is kept after the last moment it could matter
# The start of the `jti` of an app's own token, never of another (hex digits, get_jti; those
# issued before were Authlib's letters and digits). Signed with the rest: only this provider
# can write it.
APP_TOKEN_JTI = "app-"
APP_GRANT = "client_credentials"


class AccessTokenGenerator(JWTBearerTokenGenerator):
    """RFC 9068 access tokens (`typ: at+jwt`), signed with the current key (imported once
    per process, see keys.signing_key)."""

    def get_jwks(self):
        return KeySet([keys.signing_key(self.alg)])

    def get_jti(self, client, grant_type, user, scope) -> str:
        # 128 random bits in hex: one urandom call (Authlib's draws 16 characters one by one,
        # 3% of a client-credentials grant), and never a "-" (APP_TOKEN_JTI).
        jti = secrets.token_hex(16)
        return APP_TOKEN_JTI + jti if grant_type == APP_GRANT else jti

    def get_extra_claims(self, client, grant_type, user, scope):
        # The person's `sub` as this app knows it (pairwise or public).
        return {"sub": subjects.subject_for(client, user)} if user else {}


def expires_in(client, grant_type: str) -> int:
    return current_app.config["ACCESS_TOKEN_LIFETIME"]


def new_refresh_token(client, grant_type, user, scope) -> str:
    return secrets.token_urlsafe(32)


def _unverified_claims(token: str) -> dict:
    """The payload of a JWT we just signed ourselves (for its jti and exp)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


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


def sweep_tokens(now: int) -> None:
    """Prune the token rows that can no longer matter, when a sweep is due (identity.sweeps):
    wherever a row is written."""
    sweep(Token, lambda: prunable_tokens(now))


def code_grant_id(code: AuthorizationCode) -> str:
    return f"code-{code.id}"


# One statement, compiled once; the values are parameters of each execution.
TOKEN_INSERT = Token.__table__.insert()
_codes, _tokens, _events = AuthorizationCode.__table__, Token.__table__, Event.__table__
# What a grant came from, locked and checked (see _fence): the code not marked replayed, the
# refresh token it rotates not revoked. Each UPDATE changes nothing but takes the row's lock.
CODE_FENCE = (
    update(_codes)
    .where(_codes.c.id == bindparam("fence_id"), _codes.c.replayed_at.is_(None))
    .values(used_at=_codes.c.used_at)
)
REFRESH_FENCE = (
    update(_tokens)
    .where(_tokens.c.id == bindparam("fence_id"), _tokens.c.refresh_token_revoked_at == 0)
    .values(refresh_token_used_at=_tokens.c.refresh_token_used_at)
)
_TOKEN_COLUMNS = (
    "client_id",
    "token_type",
    "access_token",
    "refresh_token",
    "scope",
    "issued_at",
    "expires_in",
    "user_id",
    "grant_id",
    "sid",
    "auth_time",
    "refresh_token_expires_at",
    "access_token_revoked_at",
    "refresh_token_revoked_at",
)
_EVENT_COLUMNS = ("created_at", "type", "user_id", "ip", "data")


def _fenced_save(fence):
    """The fence, the token row and its audit event as one statement (PostgreSQL): the
    inserts take their rows from what the fence locked, so they happen only when it passed,
    and all three commit together, in autocommit mode, without BEGIN and COMMIT. It
    answers how many rows the fence locked (1, or 0: refused).

    Every value is a parameter named after no column ("new_", "event_"), and every column
    is given one (no defaults): SQLAlchemy makes a parameter named after a column of an
    UPDATE's table part of its SET, and the fence must change nothing."""
    locked = fence.returning(fence.table.c.id).cte("fence")

    def insert_from_fence(table, columns, prefix):
        values = select(*(bindparam(prefix + c, type_=table.c[c].type) for c in columns))
        return insert(table).from_select(
            columns, values.select_from(locked), include_defaults=False
        )

    token = insert_from_fence(_tokens, _TOKEN_COLUMNS, "new_").cte("new_token")
    event = insert_from_fence(_events, _EVENT_COLUMNS, "event_").cte("new_event")
    return select(func.count()).select_from(locked).add_cte(token, event)


FENCED_SAVE = {"code": _fenced_save(CODE_FENCE), "refresh": _fenced_save(REFRESH_FENCE)}


def save_token(token: dict, request) -> None:
    """Record a token response: the access token's jti, the refresh token's digest, and the
    grant it belongs to, with its audit event; refused (invalid_grant) when the grant was
    revoked since its code or refresh token was spent (_fence). An app's own token is only
    logged (see the module's docstring)."""
    if request.payload.grant_type == APP_GRANT:
        # Logged and counted, not stored: an app asking for a token per call would fill the
        # audit table, and writing a row cost more than the rest of the request.
        audit.log_only(
            "token.issued",
            client_id=request.client.client_id,
            grant_type=APP_GRANT,
            scope=token.get("scope", ""),
            refresh=False,
        )
        return
    now = int(time.time())
    claims = _unverified_claims(token["access_token"])
    code = getattr(request, "authorization_code", None)
    previous = getattr(request, "refresh_token", None)
    if code is not None:
        grant_id, sid, auth_time = code_grant_id(code), code.sid, code.auth_time
        kind, fence_id = "code", code.id
    else:  # a refresh: the other grant there is
        grant_id, sid, auth_time = previous.grant_id, previous.sid, previous.auth_time
        kind, fence_id = "refresh", previous.id
    refresh = token.get("refresh_token")
    scope = token.get("scope", "")
    row = {
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
    }
    event = audit.row(
        # A refresh is its own event: the grant goes on, no one signed in again.
        "token.refreshed" if previous is not None else "token.issued",
        request.user if request.user else None,
        client_id=request.client.client_id,
        grant_type=request.payload.grant_type,
        scope=scope,
        refresh=bool(refresh),
    )
    if db.engine.dialect.name == "sqlite":
        # Through the session: three statements in its transaction (SQLite has no INSERT in
        # a WITH, and no round trips to save). Core INSERTs: nothing reads these rows back
        # in this request, and the ORM's unit of work for two new objects cost more than
        # the writes themselves.
        _fence(kind, fence_id)
        connection = db.session.connection()
        connection.execute(TOKEN_INSERT, row)
        connection.execute(audit.EVENT_INSERT, event)
    else:
        params = {"fence_id": fence_id}
        # The two columns the row leaves to their defaults: 0, not revoked.
        params |= {f"new_{c}": row.get(c, 0) for c in _TOKEN_COLUMNS}
        params |= {f"event_{c}": event.get(c) for c in _EVENT_COLUMNS}
        params["event_created_at"] = utcnow()
        if write_alone(FENCED_SAVE[kind], params)[0] != 1:
            _refuse(kind)
    audit.announce(event)
    sweep_tokens(now)
    db.session.commit()


def _fence(kind: str, fence_id: int) -> None:
    """Lock what this grant came from (the code, or the refresh token it rotates), in the
    transaction that saves the new tokens, and refuse when it was replayed meanwhile.

    The code or refresh token was spent and committed earlier in this request; a copy
    presented since then revoked the grant (query_authorization_code,
    authenticate_refresh_token). Either that revocation committed first, and the mark is
    seen here; or it waits for this lock, and its revoking statement then sees these tokens
    (revoke_tokens). Either way no live token leaves a revoked grant. On PostgreSQL the
    fence and the inserts are one statement (FENCED_SAVE), which holds the lock until the
    tokens are committed with it."""
    fence = CODE_FENCE if kind == "code" else REFRESH_FENCE
    if db.session.connection().execute(fence, {"fence_id": fence_id}).rowcount != 1:
        db.session.rollback()
        _refuse(kind)


def _refuse(kind: str) -> None:
    what = "authorization code" if kind == "code" else "refresh token"
    raise InvalidGrantError(
        f"This grant was revoked while the request was answered: the {what} was used "
        "twice. Sign in again."
    )


def mark_code_replayed(code_id: int) -> None:
    """Mark a spent code as presented again, locking its row (the caller revokes the grant
    next and commits): see _fence."""
    db.session.execute(
        update(_codes)
        .where(_codes.c.id == code_id)
        .values(replayed_at=func.coalesce(_codes.c.replayed_at, int(time.time())))
    )


def revoke_grant(grant_id: str) -> int:
    """Revoke every token of one grant (the caller commits)."""
    return revoke_tokens(Token.grant_id == grant_id)


def revoke_tokens(*conditions) -> int:
    """Revoke the tokens matching `conditions` that are not revoked yet (the caller commits).

    The rows are locked in id order first: concurrent revocations of one grant (the losers
    of a refresh-token race all revoke it) otherwise deadlock on PostgreSQL."""
    now = int(time.time())
    not_revoked = (Token.access_token_revoked_at == 0) | (Token.refresh_token_revoked_at == 0)
    ids = db.session.scalars(
        select(Token.id)
        .where(
            *conditions,
            not_revoked,
        )
        .order_by(Token.id)
        .with_for_update()
    ).all()
    if not ids:
        return 0
    # The conditions again, not the ids: a statement of its own sees the rows committed while
    # the locks above waited (on PostgreSQL, a token saved by a grant's _fence).
    return db.session.execute(
        update(Token)
        .where(*conditions, not_revoked)
        .values(access_token_revoked_at=now, refresh_token_revoked_at=now)
    ).rowcount
