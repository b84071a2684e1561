"""Ending an SSO session: its tokens are revoked and every app that took part and registered
a `backchannel_logout_uri` receives a signed logout token (OpenID Connect Back-Channel
Logout 1.0), sent in the background so that a slow app never holds the person up."""

from __future__ import annotations

import logging
import secrets
import threading
import time

import requests
from flask import current_app
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from identity import audit
from identity.extensions import db
from identity.models import Client, Token
from identity.models.oauth import OFFLINE_ACCESS
from identity.oidc import keys, subjects

log = logging.getLogger("identity.oidc")

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Threads still delivering logout tokens (tests wait for them; nothing else needs to).
_pending: set[threading.Thread] = set()


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
    from identity.oidc.server import revoke_tokens

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
    deliveries = []
    for sid, client_id in sorted(participants):
        client = clients.get(client_id)
        uri = client.client_metadata.get("backchannel_logout_uri") if client else None
        if uri:
            subject = subjects.subject_for(client, user)  # as this app knows the person
            deliveries.append((client_id, uri, logout_token(client, subject, sid)))
    audit.record(
        "session.ended",
        user,
        reason=reason,
        apps=sorted(client_ids),
        notified=sorted({c for c, _, _ in deliveries}),
        revoked_tokens=revoked,
    )
    db.session.commit()
    if deliveries:
        timeout = current_app.config["BACKCHANNEL_LOGOUT_TIMEOUT"]
        thread = threading.Thread(target=_deliver, args=(deliveries, timeout), daemon=True)
        _pending.add(thread)
        thread.start()
    return len(deliveries)


def logout_token(client: Client, subject: str, sid: str) -> str:
    """A logout token (Back-Channel Logout 1.0, section 2.4) for one app."""
    from identity.oidc.server import client_algorithm

    alg = client_algorithm(client)
    now = int(time.time())
    claims = {
        "iss": current_app.config["ISSUER"],
        "sub": subject,
        "aud": client.client_id,
        "iat": now,
        "exp": now + 120,
        "jti": secrets.token_urlsafe(16),
        "sid": sid,
        "events": {LOGOUT_EVENT: {}},
    }
    header = {"alg": alg, "typ": "logout+jwt"}
    return jwt.encode(header, claims, KeySet([keys.signing_key(alg)]), algorithms=[alg])


def _deliver(deliveries: list[tuple[str, str, str]], timeout: float) -> None:
    try:
        with requests.Session() as http:
            for client_id, uri, token in deliveries:
                try:
                    response = http.post(
                        uri,
                        data={"logout_token": token},
                        timeout=timeout,
                        allow_redirects=False,
                        headers={"Cache-Control": "no-store"},
                    )
                except requests.RequestException as exc:
                    log.warning(
                        "back-channel logout to %s (%s) failed: %s",
                        client_id,
                        uri,
                        type(exc).__name__,
                    )
                    continue
                if response.status_code != 200:
                    log.warning(
                        "back-channel logout to %s (%s) answered %s",
                        client_id,
                        uri,
                        response.status_code,
                    )
    finally:
        _pending.discard(threading.current_thread())


def wait_for_deliveries(timeout: float = 10.0) -> None:
    """Block until background deliveries are done (tests, and a clean shutdown)."""
    deadline = time.monotonic() + timeout
    for thread in list(_pending):
        thread.join(max(0.0, deadline - time.monotonic()))
