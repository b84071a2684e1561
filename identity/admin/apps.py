"""Admin pages for apps: list, register, edit, rotate the secret, delete. Every change asks
for the admin's password again (identity.admin.guard.confirm).

Every change goes through identity.oidc.clients (the same validation as `flask client …`).
A client secret appears once, in the response to the request that made it: never in a
redirect, the session, a flash message, a log line or the audit log."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from wtforms import (
    SelectChoice,
)

from identity.admin import bp
from identity.admin.app_forms import AppForm, ConfirmForm, EditForm, lines, place_error
from identity.admin.guard import admin_required, confirm
from identity.extensions import db
from identity.models import Client, Consent, Token
from identity.oidc import clients
from identity.oidc.claims import issuer
from identity.oidc.client_rules import ClientError


def _app_or_404(client_id: str) -> Client:
    if not client_id.isprintable() or len(client_id) > 48:
        abort(404)  # PostgreSQL refuses NUL in a string: never ask it
    client = db.session.scalar(select(Client).where(Client.client_id == client_id))
    if client is None:
        abort(404)
    return client


def _secret_page(client: Client, secret: str | None, *, created: bool):
    """The only page a secret is ever on: the answer to the POST that made it."""
    return render_template(
        "admin/app_secret.html", client=client, secret=secret, created=created, issuer=issuer()
    )


def _admin() -> str:
    return current_user.username


@bp.get("/apps")
@admin_required
def apps():
    registered = db.session.scalars(select(Client).order_by(func.lower(Client.name))).all()
    return render_template("admin/apps.html", apps=registered)


@bp.route("/apps/new", methods=["GET", "POST"])
@admin_required
def apps_new():
    algorithms = list(current_app.config["SIGNING_ALGORITHMS"])
    form = AppForm()
    form.id_token_alg.choices = [SelectChoice(a) for a in algorithms]
    if request.method == "GET":
        form.id_token_alg.data = "RS256" if "RS256" in algorithms else algorithms[0]
        return render_template("admin/app_new.html", form=form)
    if confirm(form):
        try:
            client, secret = clients.create(
                form.name.data,
                lines(form.redirect_uris.data),
                public=form.public.data,
                grant_types=form.grant_types.data,
                scopes=form.scopes.data,
                post_logout_redirect_uris=lines(form.post_logout_redirect_uris.data),
                backchannel_logout_uri=(form.backchannel_logout_uri.data or "").strip() or None,
                skip_consent=form.skip_consent.data,
                id_token_alg=form.id_token_alg.data or "",
                require_acr=form.require_acr.data or None,
                subject_type=form.subject_type.data or "public",
                logo_uri=form.logo_uri.data,
                by=_admin(),
            )
        except ClientError as exc:
            db.session.rollback()
            place_error(form, exc)
        else:
            return _secret_page(client, secret, created=True)
    return render_template("admin/app_new.html", form=form), 400


@bp.route("/apps/<client_id>", methods=["GET", "POST"])
@admin_required
def apps_detail(client_id: str):
    client = _app_or_404(client_id)
    form = EditForm()
    status = 200
    if request.method == "GET":
        meta = client.as_dict()
        form.name.data = client.name
        form.redirect_uris.data = "\n".join(meta["redirect_uris"])
        form.post_logout_redirect_uris.data = "\n".join(meta["post_logout_redirect_uris"])
        form.backchannel_logout_uri.data = meta["backchannel_logout_uri"] or ""
        form.scopes.data = meta["scope"].split()
        form.skip_consent.data = client.skip_consent
        form.require_acr.data = meta["require_acr"] or ""
        form.subject_type.data = meta["subject_type"]
        form.logo_uri.data = meta["logo_uri"] or ""
    elif confirm(form):
        try:
            changes = clients.update(
                client,
                name=form.name.data,
                redirect_uris=lines(form.redirect_uris.data),
                post_logout_redirect_uris=lines(form.post_logout_redirect_uris.data),
                backchannel_logout_uri=(form.backchannel_logout_uri.data or "").strip() or None,
                scopes=form.scopes.data,
                skip_consent=form.skip_consent.data,
                require_acr=form.require_acr.data or None,
                subject_type=form.subject_type.data or "public",
                logo_uri=form.logo_uri.data,
                by=_admin(),
            )
        except ClientError as exc:
            db.session.rollback()
            place_error(form, exc)
            status = 400
        else:
            if changes:
                labels = ", ".join(CHANGE_LABELS.get(k, k) for k in changes)
                flash(f"Saved {client.name}: {labels} changed.", "success")
            else:
                flash("Nothing changed.", "info")
            return redirect(url_for("admin.apps_detail", client_id=client.client_id))
    else:
        status = 400
    return render_template("admin/app_detail.html", client=client, form=form, **_facts(client)), (
        status
    )


CHANGE_LABELS = {
    "name": "name",
    "redirect_uris": "redirect URIs",
    "post_logout_redirect_uris": "post-logout redirect URIs",
    "backchannel_logout_uri": "back-channel logout URI",
    "scope": "scopes",
    "skip_consent": "consent screen",
    "require_acr": "required sign-in",
    "subject_type": "subject identifier",
    "logo_uri": "logo",
}


def _facts(client: Client) -> dict:
    """What the detail page shows beside the form (the app's use, not its secret)."""
    now = int(datetime.now(UTC).timestamp())
    live_tokens = db.session.scalar(
        select(func.count(Token.id)).where(
            Token.client_id == client.client_id,
            Token.access_token_revoked_at == 0,
            (Token.issued_at + Token.expires_in > now)
            | ((Token.refresh_token_revoked_at == 0) & (Token.refresh_token_expires_at > now)),
        )
    )
    consents = db.session.scalar(
        select(func.count(Consent.id)).where(Consent.client_id == client.client_id)
    )
    issued = (
        datetime.fromtimestamp(client.client_id_issued_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if client.client_id_issued_at
        else "-"
    )
    return {
        "meta": client.as_dict(),
        "issued": issued,
        "live_tokens": live_tokens,
        "consents": consents,
        **_logout_failures(client),
    }


def _logout_failures(client: Client) -> dict:
    """The app's last failed back-channel logouts (audited) and how many still wait."""
    from identity.models import Event, LogoutDelivery

    recent = db.session.scalars(
        select(Event).where(Event.type == "logout.failed").order_by(Event.id.desc()).limit(200)
    ).all()
    failures = [e for e in recent if e.data.get("client_id") == client.client_id][:5]
    waiting = db.session.scalar(
        select(func.count(LogoutDelivery.id)).where(LogoutDelivery.client_id == client.client_id)
    )
    return {"logout_failures": failures, "logouts_waiting": waiting}


@bp.route("/apps/<client_id>/rotate", methods=["GET", "POST"])
@admin_required
def apps_rotate(client_id: str):
    client = _app_or_404(client_id)
    if client.public:
        abort(404)  # a public app has no secret: there is no such page
    form = ConfirmForm()
    if request.method == "POST":
        if confirm(form):
            secret = clients.rotate_secret(client, by=_admin())
            return _secret_page(client, secret, created=False)
        return render_template("admin/app_rotate.html", client=client, form=form), 400
    return render_template("admin/app_rotate.html", client=client, form=form)


@bp.route("/apps/<client_id>/delete", methods=["GET", "POST"])
@admin_required
def apps_delete(client_id: str):
    client = _app_or_404(client_id)
    form = ConfirmForm()
    if request.method == "POST":
        if confirm(form):
            name = client.name
            done = clients.delete(client, by=_admin())
            flash(
                f"Deleted {name}: {done['revoked_tokens']} tokens revoked, "
                f"{done['removed_consents']} consents removed.",
                "success",
            )
            return redirect(url_for("admin.apps"))
        return render_template(
            "admin/app_delete.html", client=client, form=form, **_facts(client)
        ), 400
    return render_template("admin/app_delete.html", client=client, form=form, **_facts(client))
