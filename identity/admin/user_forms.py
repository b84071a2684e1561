"""The account pages' forms: creating an account, confirming a dangerous action."""

from __future__ import annotations

from wtforms import BooleanField, HiddenField, PasswordField, RadioField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, ValidationError

from identity.admin.accounts import directory_name_problem, password_problems
from identity.admin.guard import admin_password_field
from identity.auth import accounts
from identity.auth.forms import email_field, new_password_fields, username_field
from identity.forms import MAX_FIELD, Form, clean, strip
from identity.models import User
from identity.passwords import policy_errors


class CreateUserForm(Form):
    username = username_field()
    email = email_field()
    name = StringField(
        "Name (optional)",
        filters=[strip],
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
        if field.errors:
            return
        if accounts.find(field.data, by_email=False):
            raise ValidationError("That username is taken. Choose another.")
        problem = directory_name_problem(field.data)
        if problem:
            raise ValidationError(problem)

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
