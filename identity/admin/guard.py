"""Who may use the admin pages, and the password check before dangerous actions."""

from __future__ import annotations

import logging
from functools import wraps

from flask import abort
from flask_login import current_user, login_required
from wtforms import PasswordField
from wtforms.validators import DataRequired, Length

from identity.auth.reauth import NOT_YOURS, password_problem  # noqa: F401 (NOT_YOURS: by name)
from identity.auth.refusals import BACKEND_DOWN, DIRECTORY_MISCONFIGURED
from identity.connectors.base import ConnectorError, DirectoryMisconfigured, LockedOut
from identity.errors import render_error
from identity.oidc import recheck

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
        except LockedOut:
            abort(403)
        except DirectoryMisconfigured as exc:
            log.error(
                "directory re-check of %s: the directory is misconfigured: %s", user.username, exc
            )
            return render_error(503, DIRECTORY_MISCONFIGURED)
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


def reauthenticated(password: str) -> bool:
    """Whether `password` proves, right now, that the signed-in admin is at the keyboard."""
    return password_problem(password) is None


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
