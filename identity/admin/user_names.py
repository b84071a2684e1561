"""An account's names, administered: an admin edits its username, e-mail address and name
(password asked again, audited), and the user page says why a username provisioned from a
directory or a provider differs from theirs (`ada` there, `ada-2` here)."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from wtforms import StringField
from wtforms.validators import Email, Length, Optional, ValidationError

from identity import audit
from identity.admin import bp
from identity.admin.accounts import by_id, directory_name_problem
from identity.admin.guard import admin_password_field, admin_required, confirm
from identity.auth import accounts, verification
from identity.auth.forms import username_field
from identity.auth.provisioning import local_username
from identity.connectors import registry
from identity.extensions import db
from identity.forms import Form, clean, strip
from identity.models import Event, User
from identity.names import fold

FROM_DIRECTORY = (
    "comes from the company directory and is read again at each sign-in: change it there"
)


class NamesForm(Form):
    """The three names and their rules, for the page and for `flask user edit`."""

    username = username_field()
    email = StringField(
        "E-mail address",
        filters=[strip],
        validators=[
            Optional(),
            clean,
            Length(max=254, message="Use at most 254 characters."),
            Email("Enter a valid e-mail address, like name@example.com."),
        ],
    )
    name = StringField(
        "Name",
        filters=[strip],
        validators=[Optional(), clean, Length(max=200, message="Use at most 200 characters.")],
    )

    def __init__(self, target: User, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = target

    def validate_username(self, field):
        if field.errors:
            return
        other = accounts.find(field.data, by_email=False)
        if other is not None and other.id != self.target.id:
            raise ValidationError(_taken("username", field.raw_data, field.data, other.username))
        if other is None:
            # A new name (its own, respelt, is no one else's): not a directory person's, but
            # for a directory-linked account its own entry's.
            problem = directory_name_problem(field.data, self.target)
            if problem:
                raise ValidationError(problem)

    def validate_email(self, field):
        if field.errors or not field.data:
            return
        other = db.session.scalar(select(User).where(User.email_key == fold(field.data)))
        if other is not None and other.id != self.target.id:
            raise ValidationError(_taken("e-mail address", field.raw_data, field.data, other.email))


class EditNamesForm(NamesForm):
    admin_password = admin_password_field()


def _taken(what: str, raw: list | None, typed: str, theirs: str | None) -> str:
    """A taken name, saying so when it is another spelling of the other account's
    (names are compared without case and width: `ＡＤＡ` is `ada`)."""
    shown = (raw or [typed])[0].strip()
    if theirs and shown != theirs:
        return (
            f"Another account has this {what}: {shown!r} is the same as {theirs!r} "
            "(case and width do not count)."
        )
    return f"Another account has this {what}."


def directory_fields(user: User) -> set[str]:
    """The fields a directory link rewrites at every sign-in (name and e-mail address)."""
    directory = registry.registry().ids_with(registry.DIRECTORY)
    return {"email", "name"} if any(link.connector in directory for link in user.links) else set()


def edit(
    user: User,
    username: str,
    email: str | None,
    name: str | None,
    *,
    by: str | None = None,
    via: str = "console",
) -> list[str]:
    """Apply the new names (the caller has validated them) and audit which changed; a new
    address is unverified (User.set_email). Returns the names of the fields changed.
    Raises IntegrityError when another account took the username or address meanwhile."""
    changed = []
    facts: dict = {}
    if username != user.username:
        facts.update(username_from=user.username, username_to=username)
        user.username = username
        changed.append("username")
    if (fold(email) if email else None) != user.email_key or (email or None) != user.email:
        user.set_email(email or None)
        changed.append("email")
    if (name or None) != user.name:
        user.name = name or None
        changed.append("name")
    if changed:
        who = {"by": by, "via": via} if by else {"via": via}
        audit.record("admin.user_edited", user, changed=changed, **facts, **who)
    db.session.commit()
    return changed


def send_verification(user: User) -> bool:
    """Mail a link that verifies the account's new address, unless links were sent to it
    too often lately (identity.auth.verification's limit); whether one was sent."""
    if verification.wait_before_sending(user):
        return False
    verification.send(user)
    return True


@bp.route("/users/<int:user_id>/edit", methods=["GET", "POST"])
@admin_required
def users_edit(user_id: int):
    user = by_id(user_id)
    locked = directory_fields(user)
    form = EditNamesForm(user)
    if not form.is_submitted():
        form.username.data, form.email.data, form.name.data = user.username, user.email, user.name
        return _page(user, form, locked)
    for name in locked:
        form[name].data = getattr(user, name)  # not editable here: kept as they are
    if not confirm(form):
        return _page(user, form, locked, 400)
    try:
        changed = edit(
            user, form.username.data, form.email.data, form.name.data, by=current_user.username
        )
    except IntegrityError:
        db.session.rollback()
        form.username.errors.append(
            "Another account took this username or e-mail address meanwhile. Try again."
        )
        return _page(user, form, locked, 409)
    if not changed:
        flash("Nothing changed.", "info")
    else:
        words = {"username": "username", "email": "e-mail address", "name": "name"}
        text = f"Saved {user.username}: {', '.join(words[c] for c in changed)} changed."
        if "email" in changed and user.email:
            text += f" {user.email} is not verified"
            if send_verification(user):
                text += ": a link to verify it was sent there"
            text += "."
        flash(text, "success")
    return redirect(url_for("admin.users_show", user_id=user.id))


def _page(user: User, form: EditNamesForm, locked: set[str], status: int = 200):
    return render_template(
        "admin/user_edit.html", user=user, form=form, locked=locked, from_directory=FROM_DIRECTORY
    ), status


@bp.app_template_global()
def provisioned_name(user: User) -> dict | None:
    """Why `user`'s username differs from the one the directory or provider gave at the first
    sign-in: {"theirs", "ours", "method"}, or None when it does not (or nobody recorded it)."""
    event = db.session.scalar(
        select(Event)
        .where(Event.user_id == user.id, Event.type == "register")
        .order_by(Event.id)
        .limit(1)
    )
    theirs = (event.data or {}).get("remote_username") if event is not None else None
    if not isinstance(theirs, str):
        return None
    base = local_username(theirs)
    if user.username == base or not user.username.startswith(f"{base}-"):
        return None  # the same name, or an admin renamed the account since
    method = event.data.get("method", "")
    return {
        "theirs": theirs,
        "ours": user.username,
        "base": base,
        "method": registry.label(method),
    }
