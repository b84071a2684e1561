"""Ending an SSO session: its tokens are revoked and every app that took part and registered
a `backchannel_logout_uri` receives a signed logout token (OpenID Connect Back-Channel
Logout 1.0), sent in the background so that a slow app never holds the person up.

Each logout to deliver is first a row (LogoutDelivery), committed with the sign-out: a
bounded pool of threads sends them concurrently, each exchange with a total deadline, and a
failed one is retried with backoff by whichever process of the service next notices it is
due (a check piggybacked on requests): nothing else to run, and a restart loses nothing."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import secrets
import socket
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

from flask import Flask, current_app
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import bindparam, delete, select, update

from identity import audit
from identity.extensions import db
from identity.models import Client, LogoutDelivery, Token
from identity.oidc import destinations, keys, subjects
from identity.oidc.claims import client_algorithm
from identity.oidc.tokens import revoke_tokens
from identity.scopes import OFFLINE_ACCESS

log = logging.getLogger("identity.oidc")

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_LIFETIME = 120
# A few sends at once per process: enough that one slow app never delays another, few
# enough that a wave of sign-outs cannot pile up threads.
POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="backchannel-logout")
MAX_ATTEMPTS = 5
BACKOFF = (0, 30, 120, 600, 3600)  # seconds before attempt n+1 (attempt 1 at once)
RETRY_CHECK_INTERVAL = 30  # seconds between two looks for due deliveries, per process
RETRY_BATCH = 20
# Deliveries submitted and not finished (tests wait for them; nothing else needs to).
_pending: set[Future] = set()
_pending_lock = threading.Lock()


def end_sessions_by_sid(user, sids: set[str], *, reason: str) -> int:
    """The SSO sessions `sids` of `user` (ended one by one, or a stolen remember-me series):
    their tokens revoked, their apps told. A sign-out leaves `offline_access` grants alone:
    they were asked for to outlive the session (Back-Channel Logout 1.0, 2.7); a password
    change, a disabled account and an explicit revocation end them."""
    condition = (Token.user_id == user.id) & Token.sid.in_(sorted(sids))
    keep = None
    if reason == "signout":
        keep = ~Token.scope.contains(OFFLINE_ACCESS, autoescape=True)
    return _end(user, condition, reason=reason, revoke_only=keep)


def end_other_sessions(user, keep_sid: str | None = None, *, reason: str) -> int:
    """Every SSO session of `user` except `keep_sid` (password change: the current one;
    reset or disabled account: none): tokens revoked, apps told."""
    condition = Token.user_id == user.id
    if keep_sid:
        condition = condition & ((Token.sid != keep_sid) | Token.sid.is_(None))
    return _end(user, condition, reason=reason)


def disable_account(user, event: str, **data) -> int:
    """Disable the account: every session and remember-me cookie ends, its tokens are
    revoked and its apps are told; `event` is audited with `data`. Returns how many
    back-channel logouts are being sent. Shared by the admin action and the directory
    re-check (a leaver), so that both end exactly the same things."""
    user.disabled = True
    user.end_sessions()
    audit.record(event, user, **data)
    db.session.commit()
    return end_other_sessions(user, reason="disabled")


def _end(user, condition, *, reason: str, revoke_only=None) -> int:
    """Revoke the tokens matching `condition` (and `revoke_only` when given); POST a logout
    token, per session, to each app that took part and has a back-channel logout endpoint
    (in the background)."""
    participants = set(
        db.session.execute(
            select(Token.sid, Token.client_id).where(condition, Token.sid.is_not(None))
        ).all()
    )
    revoked = revoke_tokens(condition if revoke_only is None else condition & revoke_only)
    client_ids = {client_id for _, client_id in participants}
    clients = (
        {
            c.client_id: c
            for c in db.session.scalars(select(Client).where(Client.client_id.in_(client_ids)))
        }
        if client_ids
        else {}
    )
    now = int(time.time())
    deliveries = []
    for sid, client_id in sorted(participants):
        client = clients.get(client_id)
        if client and client.client_metadata.get("backchannel_logout_uri"):
            deliveries.append(
                LogoutDelivery(
                    client_id=client_id,
                    subject=subjects.subject_for(client, user),  # as this app knows the person
                    sid=sid,
                    next_attempt_at=now,
                    # Worth sending while the app's session from this sign-in may live on.
                    expires_at=now + current_app.config["SESSION_LIFETIME"],
                )
            )
    db.session.add_all(deliveries)
    db.session.flush()
    delivery_ids = [d.id for d in deliveries]
    audit.record(
        "session.ended",
        user,
        reason=reason,
        apps=sorted(client_ids),
        notified=sorted({d.client_id for d in deliveries}),
        revoked_tokens=revoked,
    )
    db.session.commit()
    for row_id in delivery_ids:
        _submit(current_app._get_current_object(), row_id)
    return len(deliveries)


def logout_token(client: Client, subject: str, sid: str) -> str:
    """A logout token (Back-Channel Logout 1.0, section 2.4) for one app, made for one
    attempt: a retry gets a new one (new jti and iat), never a stale copy."""
    alg = client_algorithm(client)
    now = int(time.time())
    claims = {
        "iss": current_app.config["ISSUER"],
        "sub": subject,
        "aud": client.client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_LIFETIME,
        "jti": secrets.token_urlsafe(16),
        "sid": sid,
        "events": {LOGOUT_EVENT: {}},
    }
    header = {"alg": alg, "typ": "logout+jwt"}
    return jwt.encode(header, claims, KeySet([keys.signing_key(alg)]), algorithms=[alg])


# -- delivery -------------------------------------------------------------------------------

_rows = LogoutDelivery.__table__
# Taking a due delivery: one conditional UPDATE, so that of several processes (or nodes)
# noticing the same row, one sends it. The claim lapses by itself if that process dies.
CLAIM = (
    update(_rows)
    .where(
        _rows.c.id == bindparam("row"),
        _rows.c.claimed_until < bindparam("now"),
        _rows.c.next_attempt_at <= bindparam("now"),
    )
    .values(claimed_until=bindparam("until"), attempts=_rows.c.attempts + 1)
    .returning(*_rows.c)
)


def _submit(app: Flask, row_id: int) -> None:
    future = POOL.submit(_attempt, app, row_id)
    with _pending_lock:
        _pending.add(future)
    future.add_done_callback(_forget)


def _forget(future: Future) -> None:
    with _pending_lock:
        _pending.discard(future)
    if future.exception() is not None:
        log.error("back-channel logout delivery crashed", exc_info=future.exception())


def _attempt(app: Flask, row_id: int) -> None:
    """One attempt at one delivery, if still due and not taken by another process."""
    with app.app_context():
        try:
            _attempt_in_context(row_id)
        finally:
            db.session.remove()


def _attempt_in_context(row_id: int) -> None:
    timeout = float(current_app.config["BACKCHANNEL_LOGOUT_TIMEOUT"])
    now = int(time.time())
    claimed = (
        db.session.connection()
        .execute(CLAIM, {"row": row_id, "now": now, "until": now + int(timeout) + 30})
        .first()
    )
    db.session.commit()
    if claimed is None:
        return
    client = db.session.scalar(select(Client).where(Client.client_id == claimed.client_id))
    uri = client.client_metadata.get("backchannel_logout_uri") if client else None
    if not uri:
        db.session.execute(delete(LogoutDelivery).where(LogoutDelivery.id == row_id))
        db.session.commit()
        return
    token = logout_token(client, claimed.subject, claimed.sid)
    error = send(uri, token, timeout)
    if error is None:
        db.session.execute(delete(LogoutDelivery).where(LogoutDelivery.id == row_id))
        audit.record("logout.delivered", None, client_id=client.client_id, attempt=claimed.attempts)
        db.session.commit()
        return
    log.warning("back-channel logout to %s (%s) failed: %s", client.client_id, uri, error)
    now = int(time.time())
    retry_at = now + BACKOFF[min(claimed.attempts, len(BACKOFF) - 1)]
    final = claimed.attempts >= MAX_ATTEMPTS or retry_at >= claimed.expires_at
    if final:
        db.session.execute(delete(LogoutDelivery).where(LogoutDelivery.id == row_id))
    else:
        db.session.execute(
            update(LogoutDelivery)
            .where(LogoutDelivery.id == row_id)
            .values(next_attempt_at=retry_at, claimed_until=0, last_error=error[:200])
        )
    audit.record(
        "logout.failed",
        None,
        client_id=client.client_id,
        uri=uri,
        attempt=claimed.attempts,
        error=error[:200],
        retry_at=None if final else retry_at,
    )
    db.session.commit()


def send(uri: str, token: str, timeout: float) -> str | None:
    """POST the logout token to `uri`: None on a 200, else what went wrong. The whole
    exchange (resolution, connection, TLS, request, answer) ends within `timeout` seconds:
    an endpoint that answers a byte at a time is cut off, not waited for byte by byte.
    The connection goes to the address destinations.resolve() checked (DNS rebinding)."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(uri)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    try:
        address = destinations.resolve(parts.hostname, port)
    except destinations.ForbiddenDestination as exc:
        return f"refused: {exc}"
    sock = None
    timer = None
    try:
        sock = socket.create_connection((address, port), timeout=max(0.1, timeout))
        # The deadline of the whole exchange: shutting the socket down wakes a blocked read.
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, (sock,))
        timer.daemon = True
        timer.start()
        connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
        connection = connection_class(parts.hostname, parts.port, timeout=timeout)
        if https:
            sock = _tls_context().wrap_socket(sock, server_hostname=parts.hostname)
            timer.args = (sock,)
        connection.sock = sock
        body = urlencode({"logout_token": token})
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection.request(
            "POST",
            path,
            body,
            {"Content-Type": "application/x-www-form-urlencoded", "Cache-Control": "no-store"},
        )
        response = connection.getresponse()
        response.read(65536)
        status = response.status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() >= deadline:
            return f"no answer within {timeout:g} s"
        return f"{type(exc).__name__}: {exc}"[:200]
    finally:
        if timer is not None:
            timer.cancel()
        if sock is not None:
            sock.close()
    return None if status == 200 else f"answered {status}"


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _tls_context() -> ssl.SSLContext:
    # The trust store requests would use (REQUESTS_CA_BUNDLE when set, else certifi's);
    # requests loaded here, by a process that sends a logout, not by every worker (5 MB).
    import requests.certs

    return ssl.create_default_context(
        cafile=os.environ.get("REQUESTS_CA_BUNDLE") or requests.certs.where()
    )


# -- retries ----------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Retries ride on requests: at most every RETRY_CHECK_INTERVAL seconds per process,
    after a response, due deliveries are handed to the pool (claimed there, so that a row
    is sent by one process only). A restarted provider resumes at its first request."""
    state = {"next": 0.0}
    lock = threading.Lock()

    @app.teardown_request
    def _retry_due(_exc) -> None:
        with lock:
            if time.monotonic() < state["next"]:
                return
            state["next"] = time.monotonic() + RETRY_CHECK_INTERVAL
        try:
            retry_due(app)
        except Exception:  # noqa: BLE001 - a failed look must never fail the request
            log.exception("looking for back-channel logouts to retry failed")


def retry_due(app: Flask) -> int:
    """Hand the deliveries that are due (and not claimed) to the pool; how many."""
    now = int(time.time())
    with app.app_context():
        ids = db.session.scalars(
            select(LogoutDelivery.id)
            .where(LogoutDelivery.next_attempt_at <= now, LogoutDelivery.claimed_until < now)
            .order_by(LogoutDelivery.next_attempt_at)
            .limit(RETRY_BATCH)
        ).all()
        db.session.commit()
    for row_id in ids:
        _submit(app, row_id)
    return len(ids)


def wait_for_deliveries(timeout: float = 10.0) -> None:
    """Block until submitted deliveries are done (tests, and a clean shutdown)."""
    deadline = time.monotonic() + timeout
    while True:
        with _pending_lock:
            futures = list(_pending)
        if not futures or time.monotonic() >= deadline:
            return
        for future in futures:
            with contextlib.suppress(Exception):  # logged by _forget
                future.result(max(0.0, deadline - time.monotonic()))
