"""/authorize: sign-in when needed, consent, and the answer to the app.

The person behind an app's sign-in request is signed in when needed (prompt, max_age,
id_token_hint, acr_values, the directory read again) and asked for consent; the app gets its
answer (redirect or form_post), or the person an error page when a request must not be
redirected."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.core.errors import (
    ConsentRequiredError,
    InteractionRequiredError,
    LoginRequiredError,
)
from flask import current_app, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import bindparam, select

from identity import acr, audit
from identity.connectors import ConnectorError, LockedOut
from identity.database import adopt, read_one
from identity.errors import render_error
from identity.extensions import db
from identity.forms import PostForm
from identity.models import Client, Consent
from identity.oidc import app_context, authorize_rules, bp, recheck, subjects
from identity.oidc.claims import session_auth_time
from identity.oidc.server import server
from identity.oidc.validation import id_token_hint_claims
from identity.scopes import OFFLINE_ACCESS, consent_text, without_offline_access

log = logging.getLogger("identity.oidc")


class DirectoryUnavailableError(OAuth2Error):
    """RFC 6749 4.1.2.1: the server cannot handle the request now (the directory is down)."""

    error = "temporarily_unavailable"
    description = "The company directory is unavailable. Please try again in a few minutes."


def _error(error: OAuth2Error):
    """Back to the app when its redirect URI is known to be its own; otherwise a page here:
    never send a browser to an address the app did not register."""
    if error.redirect_uri:
        response = server().handle_error_response(None, error)
        current_app.extensions["idp.oauth.issuer_parameter"].add_issuer_parameter(
            server(), response
        )
        return _delivered(response, error.redirect_uri)
    return render_error(
        400, f"This sign-in request is not valid: {error.description or error.error}"
    )


def _delivered(response, redirect_uri: str, client: Client | None = None):
    """The answer to the app in the response mode it asked for: Authlib's redirect as is
    (query), or its parameters POSTed to the redirect URI by a page (form_post; only to an
    http(s) URI, as the request's validation made sure)."""
    location = response.headers.get("Location", "") if response.status_code == 302 else ""
    if (
        authorize_rules.response_mode(request.args) != "form_post"
        or not location.startswith(redirect_uri)
        or urlsplit(redirect_uri).scheme not in ("http", "https")
    ):
        return response
    # The redirect URI's own query stays in the action; the answer's parameters follow it.
    own = len(parse_qsl(urlsplit(redirect_uri).query, keep_blank_values=True))
    fields = parse_qsl(urlsplit(location).query, keep_blank_values=True)[own:]
    page = render_template(
        "oidc/form_post.html",
        action=redirect_uri,
        fields=fields,
        client_name=client.name if client is not None else None,
    )
    return page, 200, {"Cache-Control": "no-store"}


def _login_redirect(params: dict, hint: str | None):
    """To the login page, coming back to this request without what forced the sign-in (the
    new sign-in satisfies prompt=login and max_age; the ID token's auth_time shows it)."""
    again = dict(params)
    prompts = [p for p in (again.pop("prompt", "") or "").split() if p != "login"]
    if prompts:
        again["prompt"] = " ".join(prompts)
    again.pop("max_age", None)
    again.pop("id_token_hint", None)
    query = {"next": url_for("oidc.authorize") + "?" + urlencode(again)}
    if current_user.is_authenticated:
        query["reauth"] = "1"
    if hint:
        query["login_hint"] = hint
    return redirect(url_for("auth.login", **query))


@bp.route("/authorize", methods=["GET", "POST"])
def authorize():
    user = current_user._get_current_object() if current_user.is_authenticated else None
    try:
        grant = server().get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return _error(error)
    redirect_uri = grant.redirect_uri
    params = request.args.to_dict()
    prompts = set((params.get("prompt") or "").split())
    try:
        need_login = user is None or "login" in prompts
        if "max_age" in params:
            max_age = params["max_age"]
            if not max_age.isdigit() or len(max_age) > 10:
                raise InvalidRequestError("'max_age' must be a whole number of seconds")
            if user is not None and time.time() - session_auth_time() > int(max_age):
                need_login = True
        if params.get("id_token_hint"):
            hinted = id_token_hint_claims(params["id_token_hint"])
            if hinted is None or hinted.get("aud") != grant.client.client_id:
                raise InvalidRequestError("'id_token_hint' is not an ID token from this provider")
            if user is not None and hinted.get("sub") != subjects.subject_for(grant.client, user):
                need_login = True
        if user is not None and not need_login:
            # An app's sign-in through the open session is a sign-in too: a directory-linked
            # account's entry is read again (at most IDP_LDAP_RECHECK_SECONDS old); a leaver
            # is disabled and sent to the login page, which refuses them.
            try:
                recheck.check(user)
                need_login = user.disabled
            except LockedOut:
                # The open session does not count while the entry is locked: the login
                # page, whose sign-ins the same check refuses.
                need_login = True
            except ConnectorError as exc:
                log.error("directory re-check of %s failed: %s", user.username, exc)
                raise DirectoryUnavailableError() from None
        if need_login and "none" in prompts:
            raise LoginRequiredError()
        if need_login:
            if request.method == "POST":
                raise InvalidRequestError("sign in first")
            return _login_redirect(params, params.get("login_hint"))
        # Which methods the session used, not only how recent it is: a password-only session
        # does not meet "mfa", a TOTP code does not meet "phr". The missing step is asked.
        if len(params.get("acr_values", "")) > 200:
            raise InvalidRequestError("'acr_values' is too long")
        wanted = acr.needed(
            grant.client.client_metadata.get("require_acr"), params.get("acr_values")
        )
        if not acr.meets(session.get("amr"), wanted):
            if "none" in prompts:
                raise InteractionRequiredError()
            if request.method == "POST":
                raise InvalidRequestError("sign in first")
            again = url_for("oidc.authorize") + "?" + urlencode(params)
            return redirect(url_for("auth.step_up", acr=wanted, next=again))

        client: Client = grant.client
        scope = grant.request.scope or ""
        if "consent" not in prompts:
            # OpenID Connect Core 11: offline access only with prompt=consent (else ignored).
            scope = without_offline_access(scope)
        consent = (
            None  # a first-party app is never asked: its consent is only read to be updated
            if client.skip_consent and request.method == "GET"
            else _consent(user, client)
        )
        # prompt=consent asks every app, first-party ones included (Core 3.1.2.1).
        ask = "consent" in prompts or (
            not client.skip_consent and (consent is None or not consent.covers(scope))
        )
        if ask and "none" in prompts:
            raise ConsentRequiredError()
        if not ask and request.method == "GET":
            scope = without_offline_access(scope)  # no one is asked: no offline access
        # Read when the code is saved (Authlib validates the request again before, which
        # resets its scope): offline access only when the person was asked for it.
        grant.request.offline_access = OFFLINE_ACCESS in scope.split()
    except OAuth2Error as error:
        error.redirect_uri = redirect_uri
        error.state = grant.request.payload.state
        return _error(error)

    if request.method == "POST":
        form = PostForm()
        if not form.validate_on_submit():
            return render_error(400, "This form has expired. Go back to the app and try again.")
        if request.form.get("decision") != "allow":
            audit.record("consent.denied", user, client_id=client.client_id, scope=scope)
            db.session.commit()
            return _delivered(
                server().create_authorization_response(grant=grant, grant_user=None),
                redirect_uri,
                client,
            )
        _remember_consent(user, client, scope, consent)
    elif ask:
        return render_template(
            "oidc/consent.html",
            client=client,
            app=app_context.for_client(client, redirect_uri),
            scopes=[(s, consent_text(s)) for s in scope.split()],
            form=PostForm(),
            action=request.full_path,
        )
    return _delivered(
        server().create_authorization_response(grant=grant, grant_user=user), redirect_uri, client
    )


# A person's consent to an app, read outside the request's transaction (on PostgreSQL: one
# round trip, no BEGIN): a request that then writes nothing begins none.
CONSENT = select(Consent.__table__).where(
    Consent.user_id == bindparam("user"), Consent.client_id == bindparam("app")
)


def _consent(user, client: Client) -> Consent | None:
    row = read_one(CONSENT, {"user": user.id, "app": client.client_id})
    return None if row is None else adopt(Consent, row._mapping)


def _remember_consent(user, client: Client, scope: str, consent: Consent | None) -> None:
    if consent is None:
        consent = Consent(user_id=user.id, client_id=client.client_id, scope=scope)
        db.session.add(consent)
    else:
        consent.scope = " ".join(sorted(set(consent.scope.split()) | set(scope.split())))
    audit.record("consent.given", user, client_id=client.client_id, scope=scope)
    db.session.commit()
