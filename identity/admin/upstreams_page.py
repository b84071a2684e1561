"""Admin pages for the upstream OpenID providers (/admin/upstreams): what is configured, the
redirect URI to register at each, a live check of one's discovery document and keys, and
adding, changing and disabling those stored in the database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from config import ConfigError
from identity import audit
from identity.admin import bp
from identity.admin.guard import admin_password_field, admin_required, confirm
from identity.admin.upstream_forms import UpstreamForm
from identity.auth import upstream_trial
from identity.auth.finalize import failure_message
from identity.connectors import upstream_registry
from identity.connectors.base import RedirectFailure
from identity.extensions import db
from identity.forms import Form
from identity.models import UpstreamProvider

if TYPE_CHECKING:
    from identity.connectors.oidc_upstream import UpstreamConnector


class CheckForm(Form):
    pass


class TryForm(Form):
    admin_password = admin_password_field()


def _connectors() -> list[UpstreamConnector]:
    return upstream_registry.upstream_connectors()


@bp.get("/upstreams", endpoint="upstreams")
@admin_required
def upstreams():
    return _page()


@bp.post("/upstreams/<upstream_id>/check", endpoint="upstreams_check")
@admin_required
def upstream_check(upstream_id: str):
    """Read the upstream's discovery document and keys now; the result on the page."""
    form = CheckForm()
    if not form.validate_on_submit():
        abort(400)
    connector = next((c for c in _connectors() if c.upstream.id == upstream_id), None)
    if connector is None:
        abort(404)
    try:
        result = {"ok": True, "found": connector.check()}
    except RedirectFailure as failed:
        message = failure_message(connector.label, failed)
        result = {"ok": False, "message": message, "reason": failed.reason}
        result["detail"] = failed.detail
    audit.record("upstream.checked", None, upstream=upstream_id, ok=result["ok"])
    db.session.commit()
    return _page(checked=upstream_id, result=result), 200 if result["ok"] else 502


@bp.post("/upstreams/<upstream_id>/try", endpoint="upstreams_try")
@admin_required
def upstream_try(upstream_id: str):
    """Send the admin through the upstream's code flow as a trial: its callback shows what
    came back and signs nobody in (identity.auth.upstream_trial)."""
    connector = next((c for c in _connectors() if c.upstream.id == upstream_id), None)
    if connector is None:  # a disabled one can be tried too
        connector = upstream_registry.source().trial_connector(upstream_id)
    if connector is None:
        abort(404)
    form = TryForm()
    if not confirm(form):
        return _page(tried=upstream_id, try_form=form), 400
    try:
        response = connector.start()
        upstream_trial.begin(connector, response)
    except RedirectFailure as failed:
        audit.record(
            "admin.upstream_tried", current_user, upstream=upstream_id, outcome=failed.reason
        )
        db.session.commit()
        result = {"ok": False, "message": failure_message(connector.label, failed)}
        result |= {"reason": failed.reason, "detail": failed.detail}
        return _page(checked=upstream_id, result=result), 502
    return response


def _page(
    checked: str | None = None,
    result: dict | None = None,
    tried: str | None = None,
    try_form: TryForm | None = None,
):
    rows = upstream_registry.stored()
    connectors = _connectors()
    fixed = upstream_registry.source().fixed_ids
    live = {c.upstream.id for c in connectors}
    return render_template(
        "admin/upstreams.html",
        connectors=connectors,
        disabled=[r for r in rows if not r.enabled],
        # Enabled, and yet no button: its secret cannot be decrypted, or its id is taken by
        # IDP_OIDC_UPSTREAMS (the log says which).
        unusable=[r for r in rows if r.enabled and r.id not in live],
        fixed=fixed,
        form=CheckForm(),
        try_form=try_form or TryForm(),
        tried=tried,
        checked=checked,
        result=result,
    )


@bp.route("/upstreams/new", methods=["GET", "POST"], endpoint="upstreams_new")
@admin_required
def upstreams_new():
    form = UpstreamForm()
    if request.method == "GET":
        form.scopes.data = "openid email profile"
        form.username_claim.data = "preferred_username"
        form.enabled.data = True
        return _form_page(form, None)
    if not confirm(form):
        return _form_page(form, None), 400
    try:
        row = upstream_registry.save(form.entry())
    except ConfigError as problem:
        form.place(str(problem))
        return _form_page(form, None), 400
    row.enabled = bool(form.enabled.data)
    audit.record("upstream.added", current_user, upstream=row.id, issuer=row.issuer)
    db.session.commit()
    upstream_registry.changed()
    flash(f"{row.label} is added. Register {_redirect_uri(row.id)} at the provider.", "success")
    return redirect(url_for("admin.upstreams"))


@bp.route("/upstreams/<upstream_id>/edit", methods=["GET", "POST"], endpoint="upstreams_edit")
@admin_required
def upstreams_edit(upstream_id: str):
    row = db.session.get(UpstreamProvider, upstream_id)
    if row is None:
        abort(404)
    form = UpstreamForm(obj=None if not request.method == "GET" else row)
    form.id.data = row.id  # the id cannot change: it names the redirect URI and the links
    if request.method == "GET":
        form.client_secret.data = ""
        form.groups_claim.data = row.groups_claim or ""
        return _form_page(form, row)
    if not confirm(form):
        return _form_page(form, row), 400
    before = upstream_registry.entry_of(row, secret="")
    try:
        upstream_registry.save(form.entry(), row=row)
    except ConfigError as problem:
        db.session.rollback()
        form.place(str(problem))
        return _form_page(form, db.session.get(UpstreamProvider, upstream_id)), 400
    after = upstream_registry.entry_of(row, secret="")
    changes = [k for k in after if after[k] != before[k]]
    if form.client_secret.data:
        changes.append("client_secret")
    if row.enabled != bool(form.enabled.data):
        row.enabled = bool(form.enabled.data)
        changes.append("enabled" if row.enabled else "disabled")
    audit.record("upstream.changed", current_user, upstream=row.id, changes=changes)
    db.session.commit()
    upstream_registry.changed()
    flash(f"{row.label} is saved" + ("" if row.enabled else " (disabled)") + ".", "success")
    return redirect(url_for("admin.upstreams"))


def _redirect_uri(upstream_id: str) -> str:
    return current_app.config["ISSUER"] + url_for("oidc_upstream.callback", upstream=upstream_id)


def _form_page(form: UpstreamForm, row: UpstreamProvider | None):
    return render_template(
        "admin/upstream_form.html",
        form=form,
        row=row,
        redirect_uri=_redirect_uri(row.id) if row else None,
    )
