"""Admin page for the upstream OpenID providers (/admin/upstreams): what is configured, the
redirect URI to register at each, and a live check of one's discovery document and keys."""

from __future__ import annotations

from flask import abort, current_app, render_template

from identity import audit
from identity.admin import bp
from identity.admin.guard import admin_required
from identity.auth.forms import Form
from identity.connectors.oidc_upstream import UpstreamConnector, UpstreamFailure
from identity.extensions import db


class CheckForm(Form):
    pass


def _connectors() -> list[UpstreamConnector]:
    return [
        c
        for c in current_app.extensions["idp.redirect_connectors"]
        if isinstance(c, UpstreamConnector)
    ]


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
    except UpstreamFailure as failed:
        result = {"ok": False, "message": failed.message, "reason": failed.reason}
        result["detail"] = failed.detail
    audit.record("upstream.checked", None, upstream=upstream_id, ok=result["ok"])
    db.session.commit()
    return _page(checked=upstream_id, result=result), 200 if result["ok"] else 502


def _page(checked: str | None = None, result: dict | None = None):
    return render_template(
        "admin/upstreams.html",
        connectors=_connectors(),
        form=CheckForm(),
        checked=checked,
        result=result,
    )
