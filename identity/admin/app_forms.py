"""The forms of the admin's app pages: fields, choices, and a ClientError put on the field it
is about, in the page's words."""

from __future__ import annotations

import re

from wtforms import (
    BooleanField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from identity.admin.guard import admin_password_field
from identity.forms import BAD_CHARS, Form, clean
from identity.oidc import client_rules
from identity.oidc.client_rules import ClientError
from identity.scopes import DEFAULTS as DEFAULT_SCOPES
from identity.scopes import NAMES as SCOPE_NAMES
from identity.scopes import SCOPES

MAX_URI_LIST = 20_000  # characters in one "one per line" box (each URI: 2,000 at most)
_NEWLINE = re.compile(r"\r\n|\n|\r")

GRANT_CHOICES = [
    SelectChoice("authorization_code", "authorization_code: people sign in (code flow, PKCE)"),
    SelectChoice("refresh_token", "refresh_token: the app keeps people signed in"),
    SelectChoice("client_credentials", "client_credentials: the app calls APIs as itself"),
]
SCOPE_CHOICES = [SelectChoice(s.name, f"{s.name}: {s.admin}") for s in SCOPES]
assert [c.value for c in GRANT_CHOICES] == list(client_rules.GRANT_TYPES)

# The form field of each setting a ClientError names (its `option`).
ERROR_FIELDS = {
    "--name": "name",
    "--redirect-uri": "redirect_uris",
    "--post-logout-redirect-uri": "post_logout_redirect_uris",
    "--backchannel-logout-uri": "backchannel_logout_uri",
    "--grant-type": "grant_types",
    "--scope": "scopes",
    "--id-token-alg": "id_token_alg",
    "--acr": "require_acr",
    "--subject-type": "subject_type",
    "--logo-uri": "logo_uri",
}
# What an app may require of a sign-in (client_rules.check_acr): step-up asks for the rest.
ACR_CHOICES = [
    SelectChoice("", "Whatever the person has set up"),
    SelectChoice("mfa", "Two factors (password and a code, or a passkey)"),
    SelectChoice("phr", "A passkey (phishing-resistant)"),
]
# What an app sees as a person's `sub` (identity.oidc.subjects).
SUBJECT_CHOICES = [
    SelectChoice("public", "The account's identifier (the same for every app)"),
    SelectChoice("pairwise", "A pseudonym for this app's host (apps cannot correlate people)"),
]
LOGO_LABEL = "Logo URI (optional)"
# Option names in the middle of a message, as the page calls them.
PAGE_WORDS = {
    " (without --public)": " (leave “Public app” unticked)",
    "IDP_SIGNING_ALGORITHMS": "the configured algorithms",
}
_NOT_SUPPORTED = re.compile(r"^(.+) not supported; use (.+)$", re.S)
KNOWN_WORDS = set(client_rules.GRANT_TYPES) | set(SCOPE_NAMES)  # names, not starts


def lines(text: str | None) -> list[str]:
    """The non-empty lines of a "one per line" box, stripped."""
    return [line.strip() for line in _NEWLINE.split(text or "") if line.strip()]


def _clean_lines(form, field) -> None:
    """`clean` for a box of one value per line: line breaks are the only controls allowed."""
    if any(BAD_CHARS.search(line) for line in _NEWLINE.split(field.data or "")):
        raise ValidationError(
            "Contains characters that cannot be used (control characters or text that is "
            "not UTF-8)."
        )


def _at_least_one(message: str):
    def check(form, field) -> None:
        if not field.data:
            raise ValidationError(message)

    return check


def _known_shape(form, field) -> None:
    """Choices are checked by identity.oidc.client_rules; refuse here only what is no name at
    all, so that a 60 kB value is not repeated back in the error message."""
    for value in field.data or []:
        if len(value) > 64 or BAD_CHARS.search(value):
            raise ValidationError("Contains a value that is not one of the choices.")


def _uri_box(label: str) -> TextAreaField:
    return TextAreaField(
        label,
        validators=[
            _clean_lines,
            Length(max=MAX_URI_LIST, message=f"Use at most {MAX_URI_LIST:,} characters."),
        ],
    )


def _name_field() -> StringField:
    return StringField(
        "Name",
        validators=[
            DataRequired("Enter a name."),
            clean,
            Length(max=100, message="Use at most 100 characters."),
        ],
    )


def _uri_field(label: str = "Back-channel logout URI (optional)") -> StringField:
    return StringField(
        label,
        validators=[
            Optional(),
            clean,
            Length(max=2000, message="Use at most 2,000 characters."),
        ],
    )


def _scopes_field() -> SelectMultipleField:
    return SelectMultipleField(
        "Scopes the app may ask for",
        choices=SCOPE_CHOICES,
        default=list(DEFAULT_SCOPES),
        validate_choice=False,  # client_rules.check_scopes says which are unknown
        validators=[_known_shape, _at_least_one("Choose at least one scope.")],
    )


class AppForm(Form):
    name = _name_field()
    redirect_uris = _uri_box("Redirect URIs, one per line")
    post_logout_redirect_uris = _uri_box("Post-logout redirect URIs, one per line (optional)")
    backchannel_logout_uri = _uri_field()
    public = BooleanField("Public app: no secret (a browser or mobile app; PKCE only)")
    grant_types = SelectMultipleField(
        "Grant types",
        choices=GRANT_CHOICES,
        default=list(client_rules.DEFAULT_GRANTS),
        validate_choice=False,
        validators=[_known_shape, _at_least_one("Choose at least one grant type.")],
    )
    scopes = _scopes_field()
    skip_consent = BooleanField("First-party app: skip the consent screen")
    require_acr = SelectField(
        "Sign-in this app requires", choices=ACR_CHOICES, default="", validate_choice=False
    )
    subject_type = SelectField(
        "Subject identifier", choices=SUBJECT_CHOICES, default="public", validate_choice=False
    )
    id_token_alg = SelectField("ID token signing algorithm", validate_choice=False)
    logo_uri = _uri_field(LOGO_LABEL)
    admin_password = admin_password_field()


class EditForm(Form):
    name = _name_field()
    redirect_uris = _uri_box("Redirect URIs, one per line")
    post_logout_redirect_uris = _uri_box("Post-logout redirect URIs, one per line (optional)")
    backchannel_logout_uri = _uri_field()
    scopes = _scopes_field()
    skip_consent = BooleanField("First-party app: skip the consent screen")
    require_acr = SelectField(
        "Sign-in this app requires", choices=ACR_CHOICES, default="", validate_choice=False
    )
    subject_type = SelectField(
        "Subject identifier", choices=SUBJECT_CHOICES, default="public", validate_choice=False
    )
    logo_uri = _uri_field(LOGO_LABEL)
    admin_password = admin_password_field()


class ConfirmForm(Form):
    admin_password = admin_password_field()


def place_error(form: Form, exc: ClientError) -> None:
    """Put a ClientError on the field it is about, in the page's words."""
    name = ERROR_FIELDS.get(exc.option or "")
    if name is None or not hasattr(form, name):
        form.form_errors.append(str(exc))
        return
    text = exc.detail
    for cli_words, page_words in PAGE_WORDS.items():
        text = text.replace(cli_words, page_words)
    unknown = _NOT_SUPPORTED.match(text)
    if unknown:
        text = f"Not supported: {unknown[1]}. Use {unknown[2]}."
    elif text[:1].islower() and text.split()[0] not in KNOWN_WORDS:
        text = text[:1].upper() + text[1:]
    getattr(form, name).errors.append(text)
