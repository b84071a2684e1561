"""Admin page for the token signing keys: what is published, and rotating them."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, url_for
from flask_login import current_user

from identity.admin import bp
from identity.admin.guard import admin_password_field, admin_required, confirm
from identity.forms import Form
from identity.oidc import keys

STATE_ORDER = {"current": 0, "next": 1, "retired": 2}
STATE_TEXT = {
    "current": "signs new tokens",
    "next": "published, signs after the next rotation",
    "retired": "no longer signs; published until it expires",
}


class RotateForm(Form):
    admin_password = admin_password_field()


def _when(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC") if t else "-"


def _rows() -> list[dict]:
    keys.ensure_keys()  # as `flask keys list` and /jwks.json: a first start has none yet
    algs = list(current_app.config["SIGNING_ALGORITHMS"])
    rows = sorted(
        keys.published(),
        key=lambda r: (
            algs.index(r.alg) if r.alg in algs else len(algs),
            STATE_ORDER.get(r.state, 9),
            -(r.activated_at.timestamp() if r.activated_at else 0),
        ),
    )
    return [
        {
            "kid": r.kid,
            "alg": r.alg,
            "state": r.state,
            "explained": STATE_TEXT.get(r.state, ""),
            "activated": _when(r.activated_at),
            "expires": _when(r.expires_at),
        }
        for r in rows
    ]


def _summary(changes: list[dict]) -> str:
    """What a rotation changed, in two sentences."""
    signing = [f"{c['alg']} {c['kid'][:10]}…" for c in changes if c["now"] == "current"]
    retired = sum(c["now"] == "retired" for c in changes)
    hours = current_app.config["KEY_RETENTION"] / 3600
    kept = f"{hours:g} hours" if hours < 48 else f"{hours / 24:g} days"
    text = f"Signing keys rotated: new tokens are signed with {', '.join(signing)}."
    if retired:
        text += (
            f" The {retired} keys they replace stay published for {kept}, so tokens they "
            "signed still verify."
        )
    return text + " New next keys are published."


@bp.get("/keys", endpoint="keys")
@admin_required
def keys_list():
    return _page(RotateForm())


@bp.post("/keys/rotate")
@admin_required
def keys_rotate():
    form = RotateForm()
    if not confirm(form):
        return _page(form), 400
    changes = keys.rotate(by=current_user.username)
    flash(_summary(changes), "success")
    return redirect(url_for("admin.keys"))


def _page(form: RotateForm):
    return render_template("admin/keys.html", rows=_rows(), form=form)
