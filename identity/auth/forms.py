"""The forms of the sign-in pages; every field refuses control characters and overlong input."""

from __future__ import annotations

from flask import current_app
from wtforms import BooleanField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length, Regexp, ValidationError

from identity.forms import MAX_FIELD, Form, clean, strip
from identity.names import fold, normal

USERNAME_RE = r"^[a-z0-9][a-z0-9._-]*$"


def _normal(value):
    # What the connectors receive: one text per name (`ａda` is `ada`), case kept; the
    # lockout and account lookups fold it further (names.fold).
    return normal(value) if isinstance(value, str) else value


def _fold(value):
    # Every variant of a new name (`ＡＤＡ`, `Ada `) is the one name, stored folded.
    return fold(value) if isinstance(value, str) else value


class PasswordLength:
    """The configured policy length, checked before anything expensive."""

    def __call__(self, form, field) -> None:
        cfg = current_app.config
        n = len(field.data or "")
        if n < cfg["PASSWORD_MIN_LENGTH"]:
            raise ValidationError(f"Use at least {cfg['PASSWORD_MIN_LENGTH']} characters.")
        if n > cfg["PASSWORD_MAX_LENGTH"]:
            raise ValidationError(f"Use at most {cfg['PASSWORD_MAX_LENGTH']} characters.")


def username_field(label: str = "Username") -> StringField:
    return StringField(
        label,
        filters=[_fold],
        validators=[
            DataRequired("Enter a username."),
            clean,
            Length(min=2, max=64, message="Use 2 to 64 characters."),
            Regexp(
                USERNAME_RE,
                message="Use letters, digits, '.', '_' and '-' only, "
                "starting with a letter or digit.",
            ),
        ],
    )


def email_field() -> StringField:
    return StringField(
        "E-mail address",
        filters=[strip],
        validators=[
            DataRequired("Enter an e-mail address."),
            clean,
            Length(max=254, message="Use at most 254 characters."),
            Email("Enter a valid e-mail address, like name@example.com."),
        ],
    )


def new_password_fields() -> tuple[PasswordField, PasswordField]:
    password = PasswordField(
        "New password", validators=[DataRequired("Enter a password."), clean, PasswordLength()]
    )
    confirm = PasswordField(
        "Repeat the password",
        validators=[
            DataRequired("Repeat the password."),
            EqualTo("password", message="The two passwords differ."),
        ],
    )
    return password, confirm


class LoginForm(Form):
    username = StringField(
        "Username or e-mail",
        filters=[_normal],
        validators=[
            DataRequired("Enter your username or e-mail address."),
            clean,
            Length(max=254, message="That is too long for a username or e-mail address."),
        ],
    )
    password = PasswordField(
        "Password",
        validators=[
            DataRequired("Enter your password."),
            clean,
            Length(max=MAX_FIELD, message="That is too long for a password."),
        ],
    )
    remember = BooleanField("Keep me signed in on this device")
    next = HiddenField()


class RegisterForm(Form):
    username = username_field()
    email = email_field()
    password, confirm = new_password_fields()
    next = HiddenField()


class ChangePasswordForm(Form):
    current_password = PasswordField(
        "Current password",
        validators=[
            DataRequired("Enter your current password."),
            clean,
            Length(max=MAX_FIELD, message="That is too long for a password."),
        ],
    )
    password, confirm = new_password_fields()


class ResetRequestForm(Form):
    email = email_field()


class ResetForm(Form):
    password, confirm = new_password_fields()
