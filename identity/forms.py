"""The base of every form: text read from the form body only, control characters refused,
and the form that is nothing but its CSRF token."""

from __future__ import annotations

import re

from flask import request
from flask_wtf import FlaskForm
from flask_wtf.form import _Auto, _is_submitted
from wtforms.validators import ValidationError

# C0/C1 controls, and U+FFFD: what Werkzeug puts where the bytes were not UTF-8.
BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffd]")
MAX_FIELD = 4096  # no field needs more; beyond this the form answers "too long" at once


def clean(form, field) -> None:
    """A validator: refuses control characters and text that was not UTF-8."""
    if isinstance(field.data, str) and BAD_CHARS.search(field.data):
        raise ValidationError(
            "Contains characters that cannot be used (control characters "
            "or text that is not UTF-8)."
        )


def strip(value):
    """A filter: text without the spaces around it; anything else as it is."""
    return value.strip() if isinstance(value, str) else value


class Form(FlaskForm):
    """Reads text fields from the form body only. Flask-WTF would also feed uploaded files and
    JSON values (numbers, lists) to the validators, which expect strings."""

    class Meta:
        def wrap_formdata(self, form, formdata):
            if formdata is _Auto:
                return request.form if _is_submitted() else None
            return formdata


class PostForm(Form):
    """A form with nothing but its CSRF token (sign out, end a session, a confirmation)."""
