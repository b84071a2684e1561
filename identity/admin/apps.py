"""Admin pages for apps: list, register, edit, rotate the secret, delete. Every change asks
for the admin's password again (identity.admin.guard.confirm).

Every change goes through identity.oidc.clients (the same validation as `flask client …`).
A client secret appears once, in the response to the request that made it: never in a
redirect, the session, a flash message, a log line or the audit log."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from wtforms import (
    BooleanField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from identity.admin import bp
from identity.admin.guard import admin_password_field, admin_required, confirm
from identity.extensions import db
from identity.forms import BAD_CHARS, Form, clean
from identity.models import Client, Consent, Token
from identity.oidc import client_rules, clients
from identity.oidc.claims import issuer
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


def _lines(text: str | None) -> list[str]:
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


def _place(form: Form, exc: ClientError) -> None:
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


def _app_or_404(client_id: str) -> Client:
    if not client_id.isprintable() or len(client_id) > 48:
        abort(404)  # PostgreSQL refuses NUL in a string: never ask it
    client = db.session.scalar(select(Client).where(Client.client_id == client_id))
    if client is None:
        abort(404)
    return client


def _secret_page(client: Client, secret: str | None, *, created: bool):
    """The only page a secret is ever on: the answer to the POST that made it."""
    return render_template(
        "admin/app_secret.html", client=client, secret=secret, created=created, issuer=issuer()
    )


def _admin() -> str:
    return current_user.username


@bp.get("/apps")
@admin_required
def apps():
    registered = db.session.scalars(select(Client).order_by(func.lower(Client.name))).all()
    return render_template("admin/apps.html", apps=registered)


@bp.route("/apps/new", methods=["GET", "POST"])
@admin_required
def apps_new():
    algorithms = list(current_app.config["SIGNING_ALGORITHMS"])
    form = AppForm()
    form.id_token_alg.choices = [SelectChoice(a) for a in algorithms]
    if request.method == "GET":
        form.id_token_alg.data = "RS256" if "RS256" in algorithms else algorithms[0]
        return render_template("admin/app_new.html", form=form)
    if confirm(form):
        try:
            client, secret = clients.create(
                form.name.data,
                _lines(form.redirect_uris.data),
                public=form.public.data,
                grant_types=form.grant_types.data,
                scopes=form.scopes.data,
                post_logout_redirect_uris=_lines(form.post_logout_redirect_uris.data),
                backchannel_logout_uri=(form.backchannel_logout_uri.data or "").strip() or None,
                skip_consent=form.skip_consent.data,
                id_token_alg=form.id_token_alg.data or "",
                require_acr=form.require_acr.data or None,
                subject_type=form.subject_type.data or "public",
                logo_uri=form.logo_uri.data,
                by=_admin(),
            )
        except ClientError as exc:
            db.session.rollback()
            _place(form, exc)
        else:
            return _secret_page(client, secret, created=True)
    return render_template("admin/app_new.html", form=form), 400


@bp.route("/apps/<client_id>", methods=["GET", "POST"])
@admin_required
def apps_detail(client_id: str):
    client = _app_or_404(client_id)
    form = EditForm()
    status = 200
    if request.method == "GET":
        meta = client.as_dict()
        form.name.data = client.name
        form.redirect_uris.data = "\n".join(meta["redirect_uris"])
        form.post_logout_redirect_uris.data = "\n".join(meta["post_logout_redirect_uris"])
        form.backchannel_logout_uri.data = meta["backchannel_logout_uri"] or ""
        form.scopes.data = meta["scope"].split()
        form.skip_consent.data = client.skip_consent
        form.require_acr.data = meta["require_acr"] or ""
        form.subject_type.data = meta["subject_type"]
        form.logo_uri.data = meta["logo_uri"] or ""
    elif confirm(form):
        try:
            changes = clients.update(
                client,
                name=form.name.data,
                redirect_uris=_lines(form.redirect_uris.data),
                post_logout_redirect_uris=_lines(form.post_logout_redirect_uris.data),
                backchannel_logout_uri=(form.backchannel_logout_uri.data or "").strip() or None,
                scopes=form.scopes.data,
                skip_consent=form.skip_consent.data,
                require_acr=form.require_acr.data or None,
                subject_type=form.subject_type.data or "public",
                logo_uri=form.logo_uri.data,
                by=_admin(),
            )
        except ClientError as exc:
            db.session.rollback()
            _place(form, exc)
            status = 400
        else:
            if changes:
                labels = ", ".join(CHANGE_LABELS.get(k, k) for k in changes)
                flash(f"Saved {client.name}: {labels} changed.", "success")
            else:
                flash("Nothing changed.", "info")
            return redirect(url_for("admin.apps_detail", client_id=client.client_id))
    else:
        status = 400
    return render_template("admin/app_detail.html", client=client, form=form, **_facts(client)), (
        status
    )


CHANGE_LABELS = {
    "name": "name",
    "redirect_uris": "redirect URIs",
    "post_logout_redirect_uris": "post-logout redirect URIs",
    "backchannel_logout_uri": "back-channel logout URI",
    "scope": "scopes",
    "skip_consent": "consent screen",
    "require_acr": "required sign-in",
    "subject_type": "subject identifier",
    "logo_uri": "logo",
}


def _facts(client: Client) -> dict:
    """What the detail page shows beside the form (the app's use, not its secret)."""
    now = int(datetime.now(UTC).timestamp())
    live_tokens = db.session.scalar(
        select(func.count(Token.id)).where(
            Token.client_id == client.client_id,
            Token.access_token_revoked_at == 0,
            (Token.issued_at + Token.expires_in > now)
            | ((Token.refresh_token_revoked_at == 0) & (Token.refresh_token_expires_at > now)),
        )
    )
    consents = db.session.scalar(
        select(func.count(Consent.id)).where(Consent.client_id == client.client_id)
    )
    issued = (
        datetime.fromtimestamp(client.client_id_issued_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if client.client_id_issued_at
        else "-"
    )
    return {
        "meta": client.as_dict(),
        "issued": issued,
        "live_tokens": live_tokens,
        "consents": consents,
        **_logout_failures(client),
    }


def _logout_failures(client: Client) -> dict:
    """The app's last failed back-channel logouts (audited) and how many still wait."""
    from identity.models import Event, LogoutDelivery

    recent = db.session.scalars(
        select(Event).where(Event.type == "logout.failed").order_by(Event.id.desc()).limit(200)
    ).all()
    failures = [e for e in recent if e.data.get("client_id") == client.client_id][:5]
    waiting = db.session.scalar(
        select(func.count(LogoutDelivery.id)).where(LogoutDelivery.client_id == client.client_id)
    )
    return {"logout_failures": failures, "logouts_waiting": waiting}


@bp.route("/apps/<client_id>/rotate", methods=["GET", "POST"])
@admin_required
def apps_rotate(client_id: str):
    client = _app_or_404(client_id)
    if client.public:
        abort(404)  # a public app has no secret: there is no such page
    form = ConfirmForm()
    if request.method == "POST":
        if confirm(form):
            secret = clients.rotate_secret(client, by=_admin())
            return _secret_page(client, secret, created=False)
        return render_template("admin/app_rotate.html", client=client, form=form), 400
    return render_template("admin/app_rotate.html", client=client, form=form)


@bp.route("/apps/<client_id>/delete", methods=["GET", "POST"])
@admin_required
def apps_delete(client_id: str):
    client = _app_or_404(client_id)
    form = ConfirmForm()
    if request.method == "POST":
        if confirm(form):
            name = client.name
            done = clients.delete(client, by=_admin())
            flash(
                f"Deleted {name}: {done['revoked_tokens']} tokens revoked, "
                f"{done['removed_consents']} consents removed.",
                "success",
            )
            return redirect(url_for("admin.apps"))
        return render_template(
            "admin/app_delete.html", client=client, form=form, **_facts(client)
        ), 400
    return render_template("admin/app_delete.html", client=client, form=form, **_facts(client))
