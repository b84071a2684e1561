"""The account page's apps with access, and cutting one off.

An app has access while it holds consent or a live refresh token; cutting it off removes its
consent and revokes its tokens."""

from __future__ import annotations

import time

from flask import current_app, flash, redirect, url_for
from flask_login import current_user
from sqlalchemy import select

from identity import audit
from identity.errors import render_error
from identity.extensions import db
from identity.forms import PostForm
from identity.models import Client, Consent, Token
from identity.oidc import bp
from identity.oidc.tokens import revoke_tokens
from identity.scopes import short_text


def apps_with_access(user) -> list[dict]:
    """Apps the person allowed, and apps holding a live refresh token for them (first-party
    apps skip consent but hold tokens all the same): each can be cut off from the account page."""
    now = int(time.time())
    scopes: dict[str, set[str]] = {}
    since: dict[str, object] = {}
    for consent in db.session.scalars(select(Consent).where(Consent.user_id == user.id)):
        scopes.setdefault(consent.client_id, set()).update(consent.scope.split())
        since[consent.client_id] = consent.granted_at
    live = select(Token).where(
        Token.user_id == user.id,
        Token.refresh_token_revoked_at == 0,
        Token.refresh_token_used_at.is_(None),
        Token.refresh_token_expires_at > now,
    )
    for token in db.session.scalars(live):
        scopes.setdefault(token.client_id, set()).update(token.scope.split())
    if not scopes:
        return []
    names = dict(
        db.session.execute(
            select(Client.client_id, Client.name).where(Client.client_id.in_(list(scopes)))
        ).all()
    )
    return [
        {
            "client_id": client_id,
            "name": names[client_id],
            "scope": ", ".join(filter(None, map(short_text, sorted(granted)))) or "who you are",
            "since": since.get(client_id),
        }
        for client_id, granted in sorted(scopes.items(), key=lambda kv: names.get(kv[0], ""))
        if client_id in names
    ]


@bp.post("/account/apps/<client_id>/revoke")
def revoke_app(client_id: str):
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    form = PostForm()
    if not form.validate_on_submit():
        return render_error(400, "This form has expired. Reload the page and try again.")
    user = current_user._get_current_object()
    if (
        not client_id.isprintable()
        or len(client_id) > 48
        or client_id not in {a["client_id"] for a in apps_with_access(user)}
    ):
        return render_error(404, "That app has no access to your account.")
    consent = db.session.scalar(
        select(Consent).where(Consent.user_id == user.id, Consent.client_id == client_id)
    )
    if consent is not None:
        db.session.delete(consent)
    revoked = revoke_tokens(Token.user_id == user.id, Token.client_id == client_id)
    audit.record("consent.revoked", user, client_id=client_id, revoked_tokens=revoked)
    db.session.commit()
    flash("The app no longer has access to your account.", "info")
    return redirect(url_for("auth.account") + "#apps")
