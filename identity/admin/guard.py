"""Who may use the admin pages, and the password check before dangerous actions."""

from __future__ import annotations

import logging
from functools import wraps

from flask import abort, current_app
from flask_login import current_user, login_required
from wtforms import PasswordField
from wtforms.validators import DataRequired, Length

from identity import audit
from identity.auth.signin import BACKEND_DOWN, _find_link
from identity.connectors import ConnectorError
from identity.connectors.ldap_answers import AccountProblem
from identity.errors import render_error
from identity.extensions import db
from identity.oidc import recheck
from identity.throttle import throttle

log = logging.getLogger("identity.admin")


def admin_required(view):
    """Signed-out visitors are sent to sign in; signed-in people who are not admins get 403.

    A directory-linked admin's entry is read again when the last reading is older than
    IDP_LDAP_RECHECK_SECONDS (identity.oidc.recheck): removed from the admin group, locked
    or deleted there, the console closes within that time, not at the next sign-in. When
    the directory cannot answer, the console waits (503) rather than trust old groups."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        user = current_user._get_current_object()
        try:
            recheck.check(user)
        except ConnectorError as exc:
            log.error("directory re-check of %s failed: %s", user.username, exc)
            return render_error(503, BACKEND_DOWN)
        if user.disabled or not user.is_administrator:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def admin_password_field() -> PasswordField:
    """The field a dangerous action's form carries: the admin's own password, again."""
    return PasswordField(
        "Your password (to confirm)",
        validators=[DataRequired("Enter your password to confirm."), Length(max=1024)],
    )


NOT_YOURS = "That is not your password."


def reauthenticated(password: str) -> bool:
    """Whether `password` proves, right now, that the signed-in admin is at the keyboard."""
    return password_problem(password) is None


def password_problem(password: str) -> str | None:
    """None when `password` proves that the signed-in admin is at the keyboard: any password
    connector (local, directory) must verify it for this very account. Else the message:
    the lockout's, when the account or address may not try now (nothing is checked)."""
    user = current_user._get_current_object()
    # Counted like a sign-in: an open admin session is no way to guess the password.
    refusal = throttle().signin_begin(user.username)
    if refusal:
        return refusal.message
    for connector in current_app.extensions["idp.password_connectors"]:
        try:
            identity = connector.authenticate(user.username, password)
        except (ConnectorError, AccountProblem):
            continue
        if identity is None:
            continue
        link = _find_link(identity)
        if link is not None and link.user_id == user.id:
            throttle().signin_release(user.username)
            return None
    audit.record("admin.reauth_failure", user)
    throttle().signin_failed(user.username)
    db.session.commit()
    return NOT_YOURS


def confirm(form) -> bool:
    """Validate a dangerous action's form and the admin's password; errors go on the form."""
    if not form.validate_on_submit():
        return False
    problem = password_problem(form.admin_password.data)
    if problem:
        form.admin_password.errors.append(problem)
        form.admin_password.data = ""
        return False
    return True
