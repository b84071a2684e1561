"""Who may use the admin pages, and the password check before dangerous actions."""

from __future__ import annotations

from functools import wraps

from flask import abort, current_app
from flask_login import current_user, login_required
from wtforms import PasswordField
from wtforms.validators import DataRequired, Length

from identity import audit
from identity.auth.signin import _find_link
from identity.connectors import ConnectorError
from identity.connectors.ldap_answers import AccountProblem
from identity.extensions import db
from identity.throttle import throttle


def admin_required(view):
    """Signed-out visitors are sent to sign in; signed-in people who are not admins get 403."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_administrator:
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
