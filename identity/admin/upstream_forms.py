"""The form of an upstream OpenID provider added or changed in the admin console, and the
settings check's message put on the field it is about."""

from __future__ import annotations

import re

from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import Length

from identity.admin.guard import admin_password_field
from identity.forms import Form, clean, strip

FIELDS = (
    "id",
    "label",
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "username_claim",
    "groups_claim",
    "trust_email_verified",
)


def _text(label: str, limit: int) -> StringField:
    return StringField(
        label, filters=[strip], validators=[clean, Length(max=limit, message=f"At most {limit}.")]
    )


class UpstreamForm(Form):
    id = _text("Id", 27)
    label = _text("Button label", 60)
    issuer = _text("Issuer URL", 255)
    client_id = _text("Client id", 255)
    client_secret = PasswordField(
        "Client secret", validators=[clean, Length(max=1024, message="At most 1024.")]
    )
    scopes = _text("Scopes", 500)
    username_claim = _text("Username claim", 100)
    groups_claim = _text("Groups claim (optional)", 100)
    trust_email_verified = BooleanField("Trust the provider's email_verified")
    enabled = BooleanField("Enabled: a button on the sign-in page", default=True)
    admin_password = admin_password_field()

    def entry(self) -> dict:
        """The fields as an IDP_OIDC_UPSTREAMS entry (empty optional fields left out)."""
        entry = {name: getattr(self, name).data for name in FIELDS}
        return {k: v for k, v in entry.items() if v not in ("", None)}

    def place(self, message: str) -> None:
        """Put the settings check's message ("This provider: 'issuer' must be…") on its
        field, or on the form."""
        text = message.removeprefix("This provider: ")
        m = re.match(r"'(\w+)' (.*)", text, re.S)
        if m and m.group(1) in FIELDS:
            getattr(self, m.group(1)).errors.append(m.group(2)[:1].upper() + m.group(2)[1:])
        elif "the id" in text:
            self.id.errors.append(text[:1].upper() + text[1:])
        else:
            self.form_errors.append(text)
