"""The pages under /admin/users: the list, a new account, one account, and its actions.

identity.admin.accounts does the work. Every change (creating, disabling, enabling, setting a
password, sending a reset link, removing a sign-in method, ending sessions, changing the admin
role) asks for the admin's own password again (identity.admin.guard).
"""

from __future__ import annotations

import math
import re

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from wtforms import PasswordField

from identity.admin import accounts, bp
from identity.admin.accounts import MAX_SEARCH, PER_PAGE, NotFound, by_id, label
from identity.admin.guard import admin_required, confirm
from identity.admin.user_forms import AdminRoleForm, ConfirmForm, CreateUserForm, SetPasswordForm
from identity.connectors.registry import registry
from identity.errors import render_error
from identity.extensions import db
from identity.forms import BAD_CHARS, PostForm
from identity.models import Event, User

# -- pages --------------------------------------------------------------------------------


def _me() -> User:
    return current_user._get_current_object()


@bp.errorhandler(NotFound)  # accounts.by_id(), on every admin page that names an account
def _not_found(exc: NotFound):
    return render_error(404, str(exc))


def _bad_list_request(message: str, q: str):
    return render_template(
        "admin/users.html",
        users=[],
        total=0,
        q=q,
        page=1,
        pages=1,
        error=message,
        labels=registry().labels,
    ), 400


@bp.get("/users")
@admin_required
def users():
    q = request.args.get("q", "")
    if len(q) > MAX_SEARCH:
        return _bad_list_request(f"Search: use at most {MAX_SEARCH} characters.", "")
    if BAD_CHARS.search(q):
        return _bad_list_request("Search: contains characters that cannot be used.", "")
    raw_page = request.args.get("page", "1")
    if not re.fullmatch(r"[0-9]{1,6}", raw_page) or int(raw_page) < 1:
        return _bad_list_request("Page: use a whole number from 1.", q)
    page = int(raw_page)
    found, total = accounts.search(q, page)
    pages = max(1, math.ceil(total / PER_PAGE))
    if page > pages:
        return render_error(404, f"There is no page {page}: the last page is {pages}.")
    return render_template(
        "admin/users.html",
        users=found,
        total=total,
        q=q.strip(),
        page=page,
        pages=pages,
        error=None,
        labels=registry().labels,
    )


@bp.route("/users/new", methods=["GET", "POST"])
@admin_required
def users_new():
    form = CreateUserForm()
    if request.method == "GET":
        return render_template("admin/user_new.html", form=form)
    if not confirm(form):
        return render_template("admin/user_new.html", form=form), 400
    password = form.password.data if form.setup.data == "password" else None
    try:
        user, _ = accounts.create(
            form.username.data,
            form.email.data,
            name=form.name.data or None,
            admin=form.admin.data,
            password=password,
            by=_me().username,
        )
    except IntegrityError:
        db.session.rollback()
        form.validate()  # says which of the two was taken meanwhile
        return render_template("admin/user_new.html", form=form), 400
    if password is None:
        flash(f"{user.username} is created; a link to choose a password is on its way.", "success")
    else:
        flash(f"{user.username} is created with the password you set.", "success")
    return _done(user)


@bp.get("/users/<int:user_id>")
@admin_required
def users_show(user_id: int):
    from identity.auth import devices, remember
    from identity.oidc.account_apps import apps_with_access

    user = by_id(user_id)
    events = db.session.scalars(
        select(Event).where(Event.user_id == user.id).order_by(Event.id.desc()).limit(10)
    ).all()
    own = user.id == _me().id
    return render_template(
        "admin/user.html",
        user=user,
        me=_me(),
        labels=registry().labels,
        apps=apps_with_access(user),
        devices=devices.listing(
            user,
            sid=session.get("sid") if own else None,
            series=remember.presented_series() if own else None,
        ),
        events=events,
        usernames={user.id: user.username},
        post_form=PostForm(),
        reset_problem=accounts.reset_link_problem(user),
        factors=accounts.factors(user),
    )


# -- dangerous actions: each view names its refusal and its action; _unconfirmed does the rest


def _confirm_page(
    user: User, action: str, form, refusal: str | None = None, status: int = 200, **extra
):
    if refusal and request.method == "POST":
        status = 409
    return render_template(
        "admin/user_confirm.html",
        user=user,
        action=action,
        form=form,
        refusal=refusal,
        me=_me(),
        labels=registry().labels,
        **extra,
    ), status


def _unconfirmed(user: User, action: str, form, refusal: str | None = None, **extra):
    """The page to answer instead of acting, or None when the action may run now: a refusal
    (200 to GET, 409 to POST), the confirmation page to GET, or the page again with its
    errors (400) when the form or the admin's password does not check out."""
    if refusal:
        return _confirm_page(user, action, form, refusal, **extra)
    if request.method == "GET":
        return _confirm_page(user, action, form, **extra)
    if not confirm(form):
        # Never send a typed password back, not even in a field's value.
        for field in form:
            if isinstance(field, PasswordField):
                field.data = ""
        return _confirm_page(user, action, form, status=400, **extra)
    return None


def _unconfirmed_device(user: User, action: str, kind: str, key: str, gone: str, target: str):
    """_unconfirmed() for one line of the account's devices (`kind`: "sessions" or
    "remembered"), which says what it is on the page; `gone` (404) when it is not listed."""
    from identity.auth import devices

    line = next((d for d in devices.listing(user)[kind] if d.key == key), None)
    if line is None:
        return render_error(404, gone)
    return _unconfirmed(user, action, ConfirmForm(), device=line, target=target)


def _done(user: User, message: str | None = None, category: str = "success"):
    """After the action: say so, and back to the account's page (303: a GET follows)."""
    if message:
        flash(message, category)
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


def _signed_out(message: str, category: str):
    """After an action that ended the admin's own session: to the sign-in page. The cookie
    is emptied first: its session record is gone, and the next request would otherwise
    clear the cookie, and the message with it."""
    session.clear()
    flash(message, category)
    return redirect(url_for("auth.login"), 303)


def _told(notified: int, sep: str) -> str:
    return f"{sep} {notified} apps told." if notified else "."


@bp.route("/users/<int:user_id>/enable", methods=["GET", "POST"])
@admin_required
def users_enable(user_id: int):
    user = by_id(user_id)
    already = None if user.disabled else f"{user.username} is already active."
    if page := _unconfirmed(user, "enable", ConfirmForm(), already):
        return page
    accounts.enable(user, by=_me().username)
    return _done(user, f"{user.username} is enabled and can sign in again.")


@bp.route("/users/<int:user_id>/disable", methods=["GET", "POST"])
@admin_required
def users_disable(user_id: int):
    user = by_id(user_id)
    refusal = accounts.removal_problem(user, "disable", _me())
    if refusal is None and user.disabled:
        refusal = f"{user.username} is already disabled."
    if page := _unconfirmed(user, "disable", ConfirmForm(), refusal):
        return page
    notified = accounts.disable(user, by=_me().username)
    return _done(
        user,
        f"{user.username} is disabled: signed out everywhere, its tokens revoked"
        + _told(notified, ","),
    )


@bp.route("/users/<int:user_id>/password", methods=["GET", "POST"])
@admin_required
def users_password(user_id: int):
    user = by_id(user_id)
    form = SetPasswordForm(user)
    if page := _unconfirmed(user, "password", form):
        return page
    notified = accounts.set_password(user, form.password.data, by=_me().username)
    if user.id == _me().id:
        return _signed_out("Your password is changed; sign in with the new one.", "success")
    return _done(
        user,
        f"{user.username}'s password is set. Every session ended, its tokens are revoked"
        + _told(notified, ","),
    )


@bp.route("/users/<int:user_id>/reset-link", methods=["GET", "POST"])
@admin_required
def users_reset_link(user_id: int):
    user = by_id(user_id)
    refusal = accounts.reset_link_problem(user)
    if page := _unconfirmed(user, "reset_link", ConfirmForm(), refusal):
        return page
    accounts.send_reset_link(user, by=_me().username)
    return _done(user, f"A link to choose a new password is on its way to {user.email}.")


@bp.route("/users/<int:user_id>/methods/<int:link_id>/remove", methods=["GET", "POST"])
@admin_required
def users_unlink(user_id: int, link_id: int):
    user = by_id(user_id)
    link = next((link for link in user.links if link.id == link_id), None)
    if link is None:
        return render_error(404, f"That sign-in method is not linked to {user.username}.")
    refusal = accounts.unlink_problem(user, link)
    if page := _unconfirmed(user, "unlink", ConfirmForm(), refusal, link=link):
        return page
    method = label(link.connector)
    accounts.unlink(user, link, by=_me().username)
    return _done(user, f"{method} is no longer a way to sign in to {user.username}.")


@bp.route("/users/<int:user_id>/mfa-reset", methods=["GET", "POST"])
@admin_required
def users_mfa_reset(user_id: int):
    user = by_id(user_id)
    none = None if accounts.factors(user) else f"{user.username} has no second factor."
    if page := _unconfirmed(user, "mfa_reset", ConfirmForm(), none):
        return page
    accounts.reset_mfa(user, by=_me().username)
    if user.id == _me().id:
        return _signed_out(
            "Your second factor is reset and every session ended. Sign in again.", "info"
        )
    return _done(
        user,
        f"{user.username}'s second factor is reset and they are signed out everywhere"
        + (f"; {user.email} is told." if user.email else "."),
    )


@bp.route("/users/<int:user_id>/sessions", methods=["GET", "POST"])
@admin_required
def users_sessions(user_id: int):
    user = by_id(user_id)
    if page := _unconfirmed(user, "sessions", ConfirmForm()):
        return page
    notified = accounts.end_sessions(user, by=_me().username)
    if user.id == _me().id:
        return _signed_out("Your sessions are ended, this one too. Sign in again.", "info")
    return _done(
        user,
        f"{user.username} is signed out everywhere and its tokens are revoked"
        + _told(notified, ";"),
    )


@bp.route("/users/<int:user_id>/sessions/<sid>/end", methods=["GET", "POST"])
@admin_required
def users_end_session(user_id: int, sid: str):
    """End one session of the account (and the remembered device behind it)."""
    user = by_id(user_id)
    gone = f"That session of {user.username} has already ended."
    target = url_for("admin.users_end_session", user_id=user.id, sid=sid)
    if page := _unconfirmed_device(user, "end_session", "sessions", sid, gone, target):
        return page
    own = session.get("sid") if user.id == _me().id else None
    accounts.end_session(user, sid, keep_sid=own, by=_me().username)
    return _done(user, f"That session of {user.username} is ended, and its apps' tokens revoked.")


@bp.route("/users/<int:user_id>/devices/<device_id>/forget", methods=["GET", "POST"])
@admin_required
def users_forget_device(user_id: int, device_id: str):
    """Forget one remembered device of the account, with the sessions it restored."""
    user = by_id(user_id)
    gone = f"That device of {user.username} is already forgotten."
    target = url_for("admin.users_forget_device", user_id=user.id, device_id=device_id)
    if page := _unconfirmed_device(user, "forget_device", "remembered", device_id, gone, target):
        return page
    accounts.forget_device(user, device_id, by=_me().username)
    return _done(user, f"That device of {user.username} is forgotten.")


@bp.route("/users/<int:user_id>/admin", methods=["GET", "POST"])
@admin_required
def users_admin(user_id: int):
    user = by_id(user_id)
    form = AdminRoleForm()
    if request.method == "GET":
        form.grant.data = "0" if user.is_admin else "1"
    grant = (form.grant.data or "") == "1"
    if request.method == "POST" and form.grant.data not in ("0", "1"):
        return render_error(400, "The form does not say whether to grant or remove the role.")
    refusal = None if grant else accounts.removal_problem(user, "demote", _me())
    if refusal is None and grant == user.is_admin:
        refusal = (
            f"{user.username} is already an administrator."
            if grant
            else f"{user.username} is not an administrator."
        )
    if page := _unconfirmed(user, "admin", form, refusal, grant=grant):
        return page
    accounts.set_admin(user, grant, by=_me().username)
    return _done(
        user,
        f"{user.username} is now an administrator."
        if grant
        else f"{user.username} is no longer an administrator.",
    )
