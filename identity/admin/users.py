"""Accounts, administered: the operations (shared by the console and `flask --app idp user`)
and the pages under /admin/users.

Every operation records an audit event `admin.user_*` with who did it (`by`, the admin's
username, in the console) and where (`via`: console or cli); never a password or a link.
Every change (creating, disabling, enabling, setting a password, sending a reset link,
removing a sign-in method, ending sessions, changing the admin role) asks for the admin's
own password again (identity.admin.guard).
"""

from __future__ import annotations

import math
import re
import secrets
from concurrent.futures import Future
from datetime import timedelta

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from wtforms import BooleanField, HiddenField, PasswordField, RadioField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, ValidationError

from identity import audit, mail
from identity.admin import bp
from identity.admin.guard import admin_password_field, admin_required, confirm
from identity.auth import accounts, reset
from identity.auth.forms import (
    BAD_CHARS,
    MAX_FIELD,
    Form,
    PostForm,
    _strip,
    clean,
    email_field,
    new_password_fields,
    username_field,
)
from identity.auth.views import LABELS
from identity.errors import render_error
from identity.extensions import db
from identity.models import Event, LinkedIdentity, PasswordReset, User
from identity.models.users import utcnow
from identity.passwords import policy_errors

PER_PAGE = 50
MAX_SEARCH = 200


class Refused(Exception):
    """An operation that may not happen in the account's present state; `message` says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def label(connector: str) -> str:
    return LABELS.get(connector, connector)


def _who(by: str | None, via: str) -> dict:
    return {"by": by, "via": via} if by else {"via": via}


# -- finding ------------------------------------------------------------------------------


def search_query(text: str | None):
    """Accounts whose username, e-mail address or name contains `text`, case-insensitively,
    by username."""
    query = select(User)
    text = (text or "").strip().lower()
    if text:
        query = query.where(
            or_(
                User.username.contains(text, autoescape=True),
                User.email_key.contains(text, autoescape=True),
                func.lower(User.name).contains(text, autoescape=True),
            )
        )
    return query.order_by(User.username)


def search(text: str | None, page: int = 1, per_page: int = PER_PAGE) -> tuple[list[User], int]:
    """One page of matching accounts, and how many match in all."""
    query = search_query(text)
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    users = db.session.scalars(query.offset((page - 1) * per_page).limit(per_page)).all()
    return list(users), total


def details(user: User) -> dict:
    """Everything an admin sees about an account (the CLI's `user show --json`)."""

    def iso(t):
        return t.isoformat(timespec="seconds") + "Z" if t else None

    return {
        **user.as_dict(),
        "email_verified": user.email_verified,
        "administrator": user.is_administrator,
        "last_login_at": iso(user.last_login_at),
        "password_changed_at": iso(user.password_changed_at),
        "has_password": user.password_hash is not None,
        "second_factors": _factors(user),
        "links": [
            {
                "connector": link.connector,
                "label": label(link.connector),
                "created_at": iso(link.created_at),
                "last_used_at": iso(link.last_used_at),
            }
            for link in user.links
        ],
    }


def _factors(user: User) -> list[str]:
    from identity.auth import mfa

    return mfa.factors(user)


# -- operations ---------------------------------------------------------------------------


def create(
    username: str,
    email: str,
    *,
    name: str | None = None,
    admin: bool = False,
    password: str | None = None,
    by: str | None = None,
    via: str = "console",
) -> tuple[User, Future | None]:
    """A new local account, with `password`, or (None) with none yet and a link e-mailed to
    choose one. The caller has checked the input. Raises IntegrityError when the username or
    e-mail address was taken meanwhile."""
    user = accounts.create_local(username, email, password, admin=admin, name=name)
    audit.record(
        "admin.user_created",
        user,
        admin=admin,
        setup="password" if password is not None else "reset_link",
        **_who(by, via),
    )
    db.session.commit()
    sent = None if password is not None else send_reset_link(user, by=by, via=via, welcome=True)
    return user, sent


def disable(user: User, *, by: str | None = None, via: str = "console") -> int:
    """Disable the account: its sessions end, its tokens are revoked, its apps are told.
    Returns how many back-channel logouts were sent."""
    from identity.oidc.logout import disable_account

    return disable_account(user, "admin.user_disabled", **_who(by, via))


def enable(user: User, *, by: str | None = None, via: str = "console") -> None:
    user.disabled = False
    audit.record("admin.user_enabled", user, **_who(by, via))
    db.session.commit()


def password_problems(user: User, password: str) -> list[str]:
    if BAD_CHARS.search(password):
        return ["The password contains control characters."]
    return policy_errors(password, user.username, user.email)


def set_password(user: User, password: str, *, by: str | None = None, via: str = "console") -> int:
    """Set a new local password (the caller has checked the policy): outstanding reset links
    die, every session ends, tokens are revoked. An account without a local password gets
    one as a new way to sign in. Returns how many back-channel logouts were sent."""
    from identity.oidc.logout import end_other_sessions

    accounts.set_password(user, password)
    added = not any(link.connector == "local" for link in user.links)
    if added:
        db.session.add(LinkedIdentity(user_id=user.id, connector="local", subject=str(user.id)))
    _expire_reset_links(user)
    audit.record("admin.user_password_set", user, added_method=added, **_who(by, via))
    db.session.commit()
    return end_other_sessions(user, reason="password_reset")


def reset_link_problem(user: User) -> str | None:
    """Why no reset link can be sent to this account, or None."""
    if user.disabled:
        return "The account is disabled: enable it first."
    if not user.email:
        return "The account has no e-mail address to send a link to."
    if not any(link.connector == "local" for link in user.links):
        return (
            "The account has no password here (it signs in with "
            + ", ".join(label(link.connector) for link in user.links)
            + "): set a password instead."
        )
    return None


def send_reset_link(
    user: User, *, by: str | None = None, via: str = "console", welcome: bool = False
) -> Future:
    """E-mail a single-use link to choose a password (the reset machinery of
    identity.auth.reset: the same table, lifetime and page). The current password, if any,
    keeps working until the link is used."""
    problem = reset_link_problem(user)
    if problem:
        raise Refused(problem)
    cfg = current_app.config
    token = secrets.token_urlsafe(32)
    db.session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=reset._digest(token),
            expires_at=utcnow() + timedelta(seconds=cfg["PASSWORD_RESET_MAX_AGE"]),
        )
    )
    if not welcome:
        audit.record("admin.user_reset_link_sent", user, **_who(by, via))
    db.session.commit()
    issuer = cfg["ISSUER"].rstrip("/")
    # Built without a request (the CLI has none); the host is IDP_ISSUER's, never a header's.
    path = current_app.url_map.bind("localhost").build(
        "auth.reset_password", {"token": token}, force_external=False
    )
    link = issuer + path
    minutes = cfg["PASSWORD_RESET_MAX_AGE"] // 60
    if welcome:
        subject = "Your new account"
        opening = (
            f"An administrator created an account for you at {issuer} with the username "
            f"{user.username}. To choose your password, open this link within {minutes} minutes:"
        )
    else:
        subject = "Choose a new password"
        opening = (
            "An administrator asked you to choose a new password for your account. Open this "
            f"link within {minutes} minutes:"
        )
    return mail.send(
        user.email,
        subject,
        (
            f"Hello {user.username},\n\n{opening}\n\n{link}\n\n"
            f"The link works once. If it has expired, ask for a new one at {issuer}/reset.\n"
        ),
    )


def _expire_reset_links(user: User) -> None:
    db.session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=utcnow())
    )


def unlink_problem(user: User, link: LinkedIdentity) -> str | None:
    """Why this way to sign in cannot be removed, or None: an active account keeps one."""
    if len(user.links) < 2 and not user.disabled:
        return (
            f"{label(link.connector)} is the only way to sign in to {user.username}: removing "
            "it would leave an active account nobody can sign in to. Disable the account "
            "first, or give it another way to sign in (set a password)."
        )
    return None


def unlink(
    user: User, link: LinkedIdentity, *, by: str | None = None, via: str = "console"
) -> None:
    """Remove one way to sign in. A password removed is gone (hash and pending reset links)."""
    problem = unlink_problem(user, link)
    if problem:
        raise Refused(problem)
    connector = link.connector
    if connector == "local":
        user.password_hash = None
        _expire_reset_links(user)
    if connector == "passkey":
        # The passkeys go with their link: none of them signs in any more.
        from identity.auth import passkeys

        for passkey in passkeys.of(user):
            db.session.delete(passkey)
    user.links.remove(link)
    audit.record("admin.user_unlinked", user, method=connector, **_who(by, via))
    db.session.commit()


def reset_mfa(user: User, *, by: str | None = None, via: str = "console") -> Future | None:
    """Remove every second factor and recovery code of `user` (who lost them all), and tell
    the person by e-mail (returned: the CLI waits for it). Their next sign-in asks only the
    first factor, or, under IDP_MFA_REQUIRED, has them enrol again."""
    from identity.auth import mfa

    had = mfa.factors(user)
    if not had:
        raise Refused(f"{user.username} has no second factor to reset.")
    mfa.remove_all(user)
    audit.record("admin.user_mfa_reset", user, factors=had, **_who(by, via))
    db.session.commit()
    if not user.email:
        return None
    issuer = current_app.config["ISSUER"].rstrip("/")
    return mail.send(
        user.email,
        "Your second factor was reset",
        (
            f"Hello {user.username},\n\nAn administrator removed the authenticator app and "
            f"the recovery codes of your account at {issuer}. Your next sign-in asks only "
            "for your password (or, where a second factor is required, has you set up a new "
            "app).\n\nIf you did not ask for this, tell your administrator at once.\n"
        ),
    )


def end_sessions(user: User, *, by: str | None = None, via: str = "console") -> int:
    """End every session and remember-me cookie, revoke every token, tell the apps."""
    from identity.oidc.logout import end_other_sessions

    user.end_sessions()
    audit.record("admin.user_sessions_ended", user, **_who(by, via))
    db.session.commit()
    return end_other_sessions(user, reason="admin")


def removal_problem(user: User, action: str, me: User | None = None) -> str | None:
    """Why `me` (None: the command line) must not `action` `user` ("disable" the account or
    "demote" it, removing its administrator role), or None when it may. The console and the
    command line ask this one rule: nobody removes themselves, and an active administrator
    always remains, or nobody could use the console again."""
    if me is not None and user.id == me.id:
        if action == "disable":
            return "You cannot disable your own account. Ask another administrator."
        return "You cannot remove your own administrator role. Ask another administrator."
    if user.disabled or not user.is_administrator:
        return None  # not an active administrator: no administrator is lost
    if action == "demote" and user.in_admin_group:
        return None  # still an administrator through the directory's admin group
    if _other_active_administrator(user):
        return None
    what = "disabled" if action == "disable" else "demoted"
    return (
        f"{user.username} is the last active administrator and cannot be {what}: "
        "make another account an administrator first."
    )


def _other_active_administrator(user: User) -> bool:
    """Whether an active account other than `user` is an administrator (its own flag, or
    the directory's admin group)."""
    others = select(User).where(User.id != user.id, User.disabled.is_(False))
    if db.session.scalar(select(others.where(User.is_admin.is_(True)).exists())):
        return True
    with_groups = others.where(User.group_dns.is_not(None)).execution_options(yield_per=500)
    return any(other.is_administrator for other in db.session.scalars(with_groups))


def set_admin(user: User, admin: bool, *, by: str | None = None, via: str = "console") -> None:
    user.is_admin = admin
    audit.record(
        "admin.user_admin_granted" if admin else "admin.user_admin_revoked", user, **_who(by, via)
    )
    db.session.commit()


# -- forms --------------------------------------------------------------------------------


class CreateUserForm(Form):
    username = username_field()
    email = email_field()
    name = StringField(
        "Name (optional)",
        filters=[_strip],
        validators=[Optional(), clean, Length(max=200, message="Use at most 200 characters.")],
    )
    admin = BooleanField("Administrator")
    setup = RadioField(
        "How the person gets a password",
        choices=[
            SelectChoice("password", "Set a password now, and tell them"),
            SelectChoice("link", "E-mail them a link to choose one"),
        ],
        default="password",
    )
    password = PasswordField(
        "Password",
        validators=[clean, Length(max=MAX_FIELD, message="That is too long for a password.")],
    )
    confirm = PasswordField("Repeat the password")
    admin_password = admin_password_field()

    def validate_username(self, field):
        if not field.errors and accounts.find(field.data, by_email=False):
            raise ValidationError("That username is taken. Choose another.")

    def validate_email(self, field):
        if not field.errors and accounts.email_taken(field.data):
            raise ValidationError("An account already uses this e-mail address.")

    def validate_password(self, field):
        if self.setup.data != "password" or field.errors:
            return
        if not field.data:
            raise ValidationError("Enter a password, or choose to e-mail a link.")
        problems = policy_errors(field.data, self.username.data, self.email.data)
        if problems:
            raise ValidationError(" ".join(problems))

    def validate_confirm(self, field):
        if self.setup.data == "password" and field.data != self.password.data:
            raise ValidationError("The two passwords differ.")


class ConfirmForm(Form):
    admin_password = admin_password_field()


class SetPasswordForm(Form):
    password, confirm = new_password_fields()
    admin_password = admin_password_field()

    def __init__(self, target: User, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = target

    def validate_password(self, field):
        if field.errors:
            return
        problems = password_problems(self.target, field.data)
        if problems:
            raise ValidationError(" ".join(problems))


class AdminRoleForm(ConfirmForm):
    # What the admin saw and asked for: "1" make an admin, "0" remove the role.
    grant = HiddenField()


# -- pages --------------------------------------------------------------------------------


def _me() -> User:
    return current_user._get_current_object()


MAX_ID = 2**31 - 1  # an INTEGER column: PostgreSQL refuses to compare with more


def _target(user_id: int) -> User:
    user = db.session.get(User, user_id) if user_id <= MAX_ID else None
    if user is None:
        raise _NotFound(f"There is no user with id {user_id}.")
    return user


class _NotFound(Exception):
    pass


@bp.errorhandler(_NotFound)
def _not_found(exc: _NotFound):
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
        labels=LABELS,
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
    found, total = search(q, page)
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
        labels=LABELS,
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
        user, _ = create(
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
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.get("/users/<int:user_id>")
@admin_required
def users_show(user_id: int):
    from identity.auth import devices, remember
    from identity.oidc.account_apps import apps_with_access

    user = _target(user_id)
    events = db.session.scalars(
        select(Event).where(Event.user_id == user.id).order_by(Event.id.desc()).limit(10)
    ).all()
    own = user.id == _me().id
    return render_template(
        "admin/user.html",
        user=user,
        me=_me(),
        labels=LABELS,
        apps=apps_with_access(user),
        devices=devices.listing(
            user,
            sid=session.get("sid") if own else None,
            series=remember.presented_series() if own else None,
        ),
        events=events,
        usernames={user.id: user.username},
        post_form=PostForm(),
        reset_problem=reset_link_problem(user),
        factors=_factors(user),
    )


@bp.route("/users/<int:user_id>/enable", methods=["GET", "POST"])
@admin_required
def users_enable(user_id: int):
    user = _target(user_id)
    form = ConfirmForm()
    if not user.disabled:
        return _confirm_page(user, "enable", form, f"{user.username} is already active.")
    if request.method == "GET":
        return _confirm_page(user, "enable", form)
    if not confirm(form):
        return _confirm_page(user, "enable", form, status=400)
    enable(user, by=_me().username)
    flash(f"{user.username} is enabled and can sign in again.", "success")
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


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
        labels=LABELS,
        **extra,
    ), status


@bp.route("/users/<int:user_id>/disable", methods=["GET", "POST"])
@admin_required
def users_disable(user_id: int):
    user = _target(user_id)
    form = ConfirmForm()
    refusal = removal_problem(user, "disable", _me())
    if refusal is None and user.disabled:
        refusal = f"{user.username} is already disabled."
    if refusal:
        return _confirm_page(user, "disable", form, refusal)
    if request.method == "GET":
        return _confirm_page(user, "disable", form)
    if not confirm(form):
        return _confirm_page(user, "disable", form, status=400)
    notified = disable(user, by=_me().username)
    flash(
        f"{user.username} is disabled: signed out everywhere, its tokens revoked"
        + (f", {notified} apps told." if notified else "."),
        "success",
    )
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.route("/users/<int:user_id>/password", methods=["GET", "POST"])
@admin_required
def users_password(user_id: int):
    user = _target(user_id)
    form = SetPasswordForm(user)
    if request.method == "GET":
        return _confirm_page(user, "password", form)
    if not confirm(form):
        form.password.data = form.confirm.data = ""
        return _confirm_page(user, "password", form, status=400)
    notified = set_password(user, form.password.data, by=_me().username)
    if user.id == _me().id:
        flash("Your password is changed; sign in with the new one.", "success")
        return redirect(url_for("auth.login"), 303)
    flash(
        f"{user.username}'s password is set. Every session ended, its tokens are revoked"
        + (f", {notified} apps told." if notified else "."),
        "success",
    )
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.route("/users/<int:user_id>/reset-link", methods=["GET", "POST"])
@admin_required
def users_reset_link(user_id: int):
    user = _target(user_id)
    form = ConfirmForm()
    refusal = reset_link_problem(user)
    if refusal:
        return _confirm_page(user, "reset_link", form, refusal)
    if request.method == "GET":
        return _confirm_page(user, "reset_link", form)
    if not confirm(form):
        return _confirm_page(user, "reset_link", form, status=400)
    send_reset_link(user, by=_me().username)
    flash(f"A link to choose a new password is on its way to {user.email}.", "success")
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.route("/users/<int:user_id>/methods/<int:link_id>/remove", methods=["GET", "POST"])
@admin_required
def users_unlink(user_id: int, link_id: int):
    user = _target(user_id)
    link = next((link for link in user.links if link.id == link_id), None)
    if link is None:
        return render_error(404, f"That sign-in method is not linked to {user.username}.")
    form = ConfirmForm()
    refusal = unlink_problem(user, link)
    if refusal:
        return _confirm_page(user, "unlink", form, refusal, link=link)
    if request.method == "GET":
        return _confirm_page(user, "unlink", form, link=link)
    if not confirm(form):
        return _confirm_page(user, "unlink", form, status=400, link=link)
    method = label(link.connector)
    unlink(user, link, by=_me().username)
    flash(f"{method} is no longer a way to sign in to {user.username}.", "success")
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.route("/users/<int:user_id>/mfa-reset", methods=["GET", "POST"])
@admin_required
def users_mfa_reset(user_id: int):
    from identity.auth import mfa

    user = _target(user_id)
    form = ConfirmForm()
    if not mfa.factors(user):
        return _confirm_page(user, "mfa_reset", form, f"{user.username} has no second factor.")
    if request.method == "GET":
        return _confirm_page(user, "mfa_reset", form)
    if not confirm(form):
        return _confirm_page(user, "mfa_reset", form, status=400)
    reset_mfa(user, by=_me().username)
    flash(
        f"{user.username}'s second factor is reset"
        + (f"; {user.email} is told." if user.email else "."),
        "success",
    )
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.route("/users/<int:user_id>/sessions", methods=["GET", "POST"])
@admin_required
def users_sessions(user_id: int):
    user = _target(user_id)
    form = ConfirmForm()
    if request.method == "GET":
        return _confirm_page(user, "sessions", form)
    if not confirm(form):
        return _confirm_page(user, "sessions", form, status=400)
    notified = end_sessions(user, by=_me().username)
    if user.id == _me().id:
        flash("Your sessions are ended, this one too. Sign in again.", "info")
        return redirect(url_for("auth.login"), 303)
    flash(
        f"{user.username} is signed out everywhere and its tokens are revoked"
        + (f"; {notified} apps told." if notified else "."),
        "success",
    )
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.route("/users/<int:user_id>/sessions/<sid>/end", methods=["GET", "POST"])
@admin_required
def users_end_session(user_id: int, sid: str):
    """End one session of the account (and the remembered device behind it)."""
    from identity.auth import devices

    user = _target(user_id)
    line = next((d for d in devices.listing(user)["sessions"] if d.key == sid), None)
    if line is None:
        return render_error(404, f"That session of {user.username} has already ended.")
    form = ConfirmForm()
    target = url_for("admin.users_end_session", user_id=user.id, sid=sid)
    if request.method == "GET" or not confirm(form):
        status = 200 if request.method == "GET" else 400
        return _confirm_page(user, "end_session", form, status=status, device=line, target=target)
    own = session.get("sid") if user.id == _me().id else None
    devices.end_session(user, sid, by="admin", keep_sid=own)
    audit.record("admin.user_session_ended", user, **_who(_me().username, "console"))
    db.session.commit()
    flash(f"That session of {user.username} is ended, and its apps' tokens revoked.", "success")
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.route("/users/<int:user_id>/devices/<device_id>/forget", methods=["GET", "POST"])
@admin_required
def users_forget_device(user_id: int, device_id: str):
    """Forget one remembered device of the account, with the sessions it restored."""
    from identity.auth import devices

    user = _target(user_id)
    line = next((d for d in devices.listing(user)["remembered"] if d.key == device_id), None)
    if line is None:
        return render_error(404, f"That device of {user.username} is already forgotten.")
    form = ConfirmForm()
    target = url_for("admin.users_forget_device", user_id=user.id, device_id=device_id)
    if request.method == "GET" or not confirm(form):
        status = 200 if request.method == "GET" else 400
        return _confirm_page(user, "forget_device", form, status=status, device=line, target=target)
    devices.forget_device(user, device_id, by="admin")
    audit.record("admin.user_device_forgotten", user, **_who(_me().username, "console"))
    db.session.commit()
    flash(f"That device of {user.username} is forgotten.", "success")
    return redirect(url_for("admin.users_show", user_id=user.id), 303)


@bp.route("/users/<int:user_id>/admin", methods=["GET", "POST"])
@admin_required
def users_admin(user_id: int):
    user = _target(user_id)
    form = AdminRoleForm()
    if request.method == "GET":
        form.grant.data = "0" if user.is_admin else "1"
    grant = (form.grant.data or "") == "1"
    refusal = None
    if request.method == "POST" and form.grant.data not in ("0", "1"):
        return render_error(400, "The form does not say whether to grant or remove the role.")
    if not grant:
        refusal = removal_problem(user, "demote", _me())
    if refusal is None and grant == user.is_admin:
        refusal = (
            f"{user.username} is already an administrator."
            if grant
            else f"{user.username} is not an administrator."
        )
    if refusal:
        return _confirm_page(user, "admin", form, refusal, grant=grant)
    if request.method == "GET":
        return _confirm_page(user, "admin", form, grant=grant)
    if not confirm(form):
        return _confirm_page(user, "admin", form, status=400, grant=grant)
    set_admin(user, grant, by=_me().username)
    flash(
        f"{user.username} is now an administrator."
        if grant
        else f"{user.username} is no longer an administrator.",
        "success",
    )
    return redirect(url_for("admin.users_show", user_id=user.id), 303)
