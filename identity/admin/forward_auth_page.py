"""Admin page for forward authentication: the access rules per site, added and removed."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length

from identity import audit
from identity.admin import bp
from identity.admin.guard import admin_password_field, admin_required, confirm
from identity.extensions import db
from identity.forms import Form
from identity.forward_auth import rules
from identity.models import ForwardAuthRule


class RuleForm(Form):
    host = StringField("Host", validators=[Length(max=253)])
    path = StringField("Path prefix", default="/", validators=[Length(max=512)])
    groups = StringField(
        "Groups (comma-separated; empty: anyone signed in)", validators=[Length(max=2000)]
    )
    acr = SelectField(
        "Sign-in strength",
        choices=[
            SelectChoice("any", "any sign-in"),
            SelectChoice("mfa", "a second factor"),
            SelectChoice("phr", "a passkey"),
        ],
        default="any",
    )
    admin_password = admin_password_field()


class RemoveForm(Form):
    admin_password = admin_password_field()


@bp.get("/forward-auth", endpoint="forward_auth")
@admin_required
def forward_auth_rules():
    return _page(RuleForm())


@bp.post("/forward-auth", endpoint="forward_auth_add")
@admin_required
def forward_auth_add():
    form = RuleForm()
    if not confirm(form):
        return _page(form), 400
    try:
        wanted = rules.check(
            form.host.data, form.path.data, (form.groups.data or "").split(","), form.acr.data
        )
        rule = rules.add(wanted)
    except rules.RuleError as problem:
        getattr(form, problem.field).errors = [problem.message]
        return _page(form), 400
    d = rules.describe(rule)
    audit.record("forward_auth.rule_added", current_user._get_current_object(), **_facts(d))
    db.session.commit()
    flash(f"Rule added: {d['host']}{d['path']} for {d['who']}, with {d['strength']}.", "success")
    return redirect(url_for("admin.forward_auth"), 303)


@bp.route(
    "/forward-auth/<int:rule_id>/remove", methods=["GET", "POST"], endpoint="forward_auth_remove"
)
@admin_required
def forward_auth_remove(rule_id: int):
    """A confirmation page: removing a rule can let more people in (the path falls to a
    shorter prefix of the host), so it says what decides afterwards and asks the password."""
    rule = db.session.get(ForwardAuthRule, rule_id)
    if rule is None:
        abort(404)
    form = RemoveForm()
    d = rules.describe(rule)
    if request.method == "POST" and confirm(form):
        db.session.delete(rule)
        audit.record("forward_auth.rule_removed", current_user._get_current_object(), **_facts(d))
        db.session.commit()
        flash(f"Rule removed: {d['host']}{d['path']}.", "success")
        return redirect(url_for("admin.forward_auth"), 303)
    after = rules.deciding_without(rule)
    page = render_template(
        "admin/forward_auth_remove.html",
        rule=d,
        after=rules.describe(after) if after is not None else None,
        form=form,
    )
    return (page, 400) if request.method == "POST" else page


def _facts(d: dict) -> dict:
    return {
        "rule": d["id"],
        "host": d["host"],
        "path": d["path"],
        "groups": d["groups"],
        "acr": d["acr"],
    }


def _page(form: RuleForm):
    return render_template(
        "admin/forward_auth.html",
        rules=[rules.describe(r) for r in rules.listed()],
        form=form,
        domain=current_app.config["FORWARD_AUTH_COOKIE_DOMAIN"],
    )
