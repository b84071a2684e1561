"""Admin page: the directory binding tester."""

from __future__ import annotations

import dataclasses

from flask import current_app, render_template, request
from wtforms import PasswordField, StringField
from wtforms.validators import Length, Optional, ValidationError

from identity.admin import bp
from identity.admin.guard import admin_required
from identity.forms import Form, clean
from identity.settings.ldap import template_problem


def _ldap_url(form, field) -> None:
    for url in (field.data or "").split():
        if not url.startswith(("ldap://", "ldaps://")):
            raise ValidationError(f"{url!r} is not an ldap:// or ldaps:// URL.")


def _has_username(form, field) -> None:
    problem = template_problem(field.data, ("username",)) if field.data else None
    if problem:
        raise ValidationError(f"The filter {problem}.")


class LdapTestForm(Form):
    url = StringField(
        "Server URLs (blank: the configured ones)",
        validators=[Optional(), clean, Length(max=1000), _ldap_url],
    )
    bind_dn = StringField(
        "Service account DN (blank: the configured one)",
        validators=[Optional(), clean, Length(max=1000)],
    )
    bind_password = PasswordField(
        "Service account password (blank: the stored one, never sent to a changed URL)",
        validators=[Optional(), clean, Length(max=1024)],
    )
    base = StringField(
        "User search base (blank: the configured one)",
        validators=[Optional(), clean, Length(max=1000)],
    )
    user_filter = StringField(
        "User filter (blank: the configured one)",
        validators=[Optional(), clean, Length(max=1000), _has_username],
    )
    username = StringField(
        "Username to look up (optional)", validators=[Optional(), clean, Length(max=256)]
    )
    password = PasswordField(
        "That user's password (optional)", validators=[Optional(), clean, Length(max=1024)]
    )


@bp.route("/ldap/test", methods=["GET", "POST"])
@admin_required
def ldap_test():
    # ldap3 loaded by the page that uses it, not by every worker (5 MB).
    from identity.admin import ldap_tester
    from identity.connectors.ldap_connection import Settings

    cfg = current_app.config
    form = LdapTestForm()
    steps = None
    if request.method == "POST":
        if not form.validate_on_submit():
            return _page(form, None), 400
        urls = tuple(u.rstrip("/") for u in (form.url.data or "").split())
        if not urls and not cfg["LDAP_URL"]:
            form.url.errors.append("No directory is configured: enter a server URL.")
            return _page(form, None), 400
        withheld = bool(urls) and not form.bind_password.data
        settings = Settings.from_config(
            cfg,
            urls=urls or None,
            bind_dn=form.bind_dn.data or None,
            bind_password=form.bind_password.data or None,
            user_base=form.base.data or None,
            user_filter=form.user_filter.data or None,
        )
        if withheld:
            settings = dataclasses.replace(settings, bind_password=None)
        steps = ldap_tester.run(
            settings,
            form.username.data or None,
            form.password.data or None,
            bind_password_withheld=withheld,
        )
        form.password.data = form.bind_password.data = ""
    return _page(form, steps)


def _page(form: LdapTestForm, steps):
    from identity.admin import ldap_tester

    cfg = current_app.config
    configured = {
        "URLs": " ".join(cfg["LDAP_URL"]) or "not configured",
        "StartTLS": "yes" if cfg["LDAP_START_TLS"] else "no",
        "CA file": cfg["LDAP_CA_FILE"] or "system trust store",
        "Certificate check": "OFF (insecure)" if cfg["LDAP_TLS_INSECURE_SKIP_VERIFY"] else "on",
        "Service account": cfg["LDAP_BIND_DN"] or "none",
        "Service password": "set (never shown)" if cfg["LDAP_BIND_PASSWORD"] else "not set",
        "User base": cfg["LDAP_USER_BASE"] or "-",
        "User filter": cfg["LDAP_USER_FILTER"],
        "DN template": cfg["LDAP_USER_DN_TEMPLATE"] or "-",
        "Group base": cfg["LDAP_GROUP_BASE"] or f"- (using {cfg['LDAP_MEMBEROF_ATTRIBUTE']})",
        "Admin group": cfg["LDAP_ADMIN_GROUP"] or "-",
    }
    verdict = ldap_tester.verdict(steps) if steps is not None else None
    return render_template(
        "admin/ldap_test.html",
        form=form,
        steps=steps,
        verdict=verdict,
        verdicts=ldap_tester.VERDICTS,
        configured=configured,
    )
