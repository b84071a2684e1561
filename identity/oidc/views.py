"""The provider's endpoints. Authlib validates and answers; these views add the person: the
sign-in when needed (prompt, max_age, id_token_hint), consent, and the error page for
requests that must not be redirected."""

from __future__ import annotations

import base64
import logging
import time
from urllib.parse import parse_qsl, urlencode, urlsplit

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError, MissingAuthorizationError
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from authlib.oidc.core.errors import (
    ConsentRequiredError,
    InteractionRequiredError,
    LoginRequiredError,
)
from flask import current_app, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user
from flask_wtf.csrf import validate_csrf
from sqlalchemy import select
from wtforms.validators import ValidationError

from identity import acr, audit
from identity.auth.forms import PostForm
from identity.auth.signin import sign_out
from identity.connectors import ConnectorError
from identity.errors import render_error
from identity.extensions import csrf, db
from identity.models import Client, Consent, Token
from identity.models.oauth import OFFLINE_ACCESS
from identity.oidc import authorize_rules, bp, client_cache, keys, recheck, subjects
from identity.oidc.clients import SCOPES
from identity.oidc.server import (
    CLIENT_AUTH_METHODS,
    id_token_hint_claims,
    issuer,
    revoke_tokens,
    server,
    session_auth_time,
    user_claims,
    without_offline_access,
)
from identity.throttle import SLOW_DOWN, throttle

log = logging.getLogger("identity.oidc")

SCOPE_TEXT = {
    "openid": "Know who you are (your account's identifier)",
    "profile": "Your name and username",
    "email": "Your e-mail address",
    "groups": "The groups you belong to",
    "offline_access": "Stay connected when you are not using it",
}

SCOPE_SHORT = {
    "profile": "name",
    "email": "e-mail",
    "groups": "groups",
    "offline_access": "offline access",
}


@bp.get("/.well-known/openid-configuration")
def discovery():
    base = issuer()
    algs = list(current_app.config["SIGNING_ALGORITHMS"])
    body = {
        "issuer": base,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "userinfo_endpoint": f"{base}/userinfo",
        "jwks_uri": f"{base}/jwks.json",
        "introspection_endpoint": f"{base}/introspect",
        "revocation_endpoint": f"{base}/revoke",
        "end_session_endpoint": f"{base}/end_session",
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": authorize_rules.RESPONSE_MODES,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": list(subjects.SUBJECT_TYPES),
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS[:2],
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "amr",
            "acr",
            "sid",
            "at_hash",
            "name",
            "preferred_username",
            "email",
            "email_verified",
            "groups",
        ],
        "prompt_values_supported": ["none", "login", "consent"],
        "acr_values_supported": acr.SUPPORTED,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# -- authorization ------------------------------------------------------------------------


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
            except ConnectorError as exc:
                log.error("directory re-check of %s failed: %s", user.username, exc)
                raise DirectoryUnavailableError() from None
            need_login = user.disabled
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
            else db.session.scalar(
                select(Consent).where(
                    Consent.user_id == user.id, Consent.client_id == client.client_id
                )
            )
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
            scopes=[(s, SCOPE_TEXT.get(s, s)) for s in scope.split()],
            form=PostForm(),
            action=request.full_path,
        )
    return _delivered(
        server().create_authorization_response(grant=grant, grant_user=user), redirect_uri, client
    )


def _remember_consent(user, client: Client, scope: str, consent: Consent | None) -> None:
    if consent is None:
        consent = Consent(user_id=user.id, client_id=client.client_id, scope=scope)
        db.session.add(consent)
    else:
        consent.scope = " ".join(sorted(set(consent.scope.split()) | set(scope.split())))
    audit.record("consent.given", user, client_id=client.client_id, scope=scope)
    db.session.commit()


# -- endpoints for apps -------------------------------------------------------------------


@bp.before_request
def _malformed_basic_credentials():
    """Authlib's Basic parser raises on "Basic " with nothing after it, or credentials that are
    not UTF-8 (a 500): such a header is answered as the invalid_client it is."""
    header = request.headers.get("Authorization", "")
    if request.endpoint not in ("oidc.token", "oidc.introspect", "oidc.revoke"):
        return None
    if header[:6].lower() != "basic " and header.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    if decoded:
        return None
    body = {"error": "invalid_client", "error_description": "Malformed Basic credentials."}
    return jsonify(body), 401, {"WWW-Authenticate": 'Basic error="invalid_client"'}


@bp.before_request
def _one_client_authentication():
    """RFC 6749 2.3: a client uses one authentication method per request. Basic credentials
    with a client_secret (or a client_assertion) in the body are refused, rather than one of
    them silently winning."""
    if request.endpoint not in ("oidc.token", "oidc.introspect", "oidc.revoke"):
        return None
    used = [
        request.headers.get("Authorization", "")[:6].lower() == "basic ",
        "client_secret" in request.form,
        "client_assertion" in request.form,
    ]
    if sum(used) < 2:
        return None
    body = {
        "error": "invalid_request",
        "error_description": "Use one client authentication method per request (RFC 6749 2.3).",
    }
    return jsonify(body), 400, {"Cache-Control": "no-store"}


@bp.post("/token")
@csrf.exempt
def token():
    limits = throttle()
    wait = limits.token_wait()
    if wait:
        body = {"error": "slow_down", "error_description": SLOW_DOWN.format(seconds=wait)}
        return jsonify(body), 429, {"Retry-After": str(wait)}
    response = server().create_token_response()
    if response.status_code in (400, 401) and _error_code(response) == "invalid_client":
        limits.token_failed()
    return response


def _error_code(response) -> str | None:
    body = response.get_json(silent=True)
    return body.get("error") if isinstance(body, dict) else None


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf.exempt
def userinfo():
    protector = current_app.extensions["idp.oauth.protector"]
    try:
        row = protector.acquire_token("openid")
    except OAuth2Error as error:
        return _bearer_error(error)
    if row.user is None or row.user.disabled:
        return _bearer_error(InvalidTokenError("The account is disabled."))
    return jsonify(user_claims(row.user, row.scope, client_cache.lookup(row.client_id)))


def _bearer_error(error: OAuth2Error):
    """RFC 6750 section 3: the error in the body and in WWW-Authenticate."""
    if isinstance(error, MissingAuthorizationError):
        # No credentials at all: a bare challenge, no error code (RFC 6750 3.1).
        body = {
            "error": "invalid_request",
            "error_description": "Send an access token: Authorization: Bearer <token>",
        }
        return jsonify(body), 401, {"WWW-Authenticate": "Bearer"}
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return jsonify(dict(error.get_body())), error.status_code, headers


@bp.post("/introspect")
@csrf.exempt
def introspect():
    return server().create_endpoint_response("introspection")


@bp.post("/revoke")
@csrf.exempt
def revoke():
    return server().create_endpoint_response("revocation")


# -- signing out --------------------------------------------------------------------------


@bp.route("/end_session", methods=["GET", "POST"])
@csrf.exempt  # apps may POST here (RP-Initiated Logout); our own confirmation form is checked
def end_session():
    try:
        ending = server().validate_endpoint_request("end_session")
    except OAuth2Error as error:
        return render_error(400, f"This sign-out request is not valid: {error.description}")
    confirmed = False
    if request.method == "POST" and "csrf_token" in request.form:
        try:
            validate_csrf(request.form["csrf_token"])
        except ValidationError:
            return render_error(400, "This form has expired. Reload the page and try again.")
        confirmed = True
    # Without a hint, or with a hint about someone else than who is signed in here, the
    # person decides (a link from anywhere must not sign them out unasked).
    someone_else = (
        ending.id_token_claims is not None
        and current_user.is_authenticated
        and ending.id_token_claims.get("sub") != subjects.subject_for(ending.client, current_user)
    )
    if (
        (ending.needs_confirmation or someone_else)
        and not confirmed
        and current_user.is_authenticated
    ):
        return render_template(
            "oidc/end_session.html", client=ending.client, form=PostForm(), action=request.full_path
        )
    if current_user.is_authenticated:
        audit.record("signout", current_user._get_current_object(), via="end_session")
        db.session.commit()
    response = server().create_endpoint_response("end_session", ending)
    sign_out()
    if response is not None and response.status_code == 302:
        return response
    return render_template("oidc/signed_out.html", client=ending.client)


# -- the account page: apps with access ---------------------------------------------------


def apps_with_access(user) -> list[dict]:
    """Apps the person allowed, and apps holding a live refresh token for them (first-party
    apps skip consent but hold tokens all the same): each can be cut off from the account page."""
    now = int(time.time())
    scopes: dict[str, set[str]] = {}
    since: dict[str, object] = {}
    for consent in db.session.scalars(select(Consent).where(Consent.user_id == user.id)):
        scopes.setdefault(consent.client_id, set()).update(consent.scope.split())
        since[consent.client_id] = consent.granted_at
    live = select(Token).where(
        Token.user_id == user.id,
        Token.refresh_token_revoked_at == 0,
        Token.refresh_token_used_at.is_(None),
        Token.refresh_token_expires_at > now,
    )
    for token in db.session.scalars(live):
        scopes.setdefault(token.client_id, set()).update(token.scope.split())
    if not scopes:
        return []
    names = dict(
        db.session.execute(
            select(Client.client_id, Client.name).where(Client.client_id.in_(list(scopes)))
        ).all()
    )
    return [
        {
            "client_id": client_id,
            "name": names[client_id],
            "scope": ", ".join(SCOPE_SHORT.get(s, s) for s in sorted(granted) if s != "openid")
            or "who you are",
            "since": since.get(client_id),
        }
        for client_id, granted in sorted(scopes.items(), key=lambda kv: names.get(kv[0], ""))
        if client_id in names
    ]


@bp.post("/account/apps/<client_id>/revoke")
def revoke_app(client_id: str):
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    form = PostForm()
    if not form.validate_on_submit():
        return render_error(400, "This form has expired. Reload the page and try again.")
    user = current_user._get_current_object()
    if (
        not client_id.isprintable()
        or len(client_id) > 48
        or client_id not in {a["client_id"] for a in apps_with_access(user)}
    ):
        return render_error(404, "That app has no access to your account.")
    consent = db.session.scalar(
        select(Consent).where(Consent.user_id == user.id, Consent.client_id == client_id)
    )
    if consent is not None:
        db.session.delete(consent)
    revoked = revoke_tokens(Token.user_id == user.id, Token.client_id == client_id)
    audit.record("consent.revoked", user, client_id=client_id, revoked_tokens=revoked)
    db.session.commit()
    from flask import flash

    flash("The app no longer has access to your account.", "info")
    return redirect(url_for("auth.account") + "#apps")


@bp.get("/jwks.json")
def jwks():
    keys.ensure_keys()  # first start: publish keys before anything is signed with them
    response = jsonify(keys.jwks())
    # Apps may cache it: a key is published one rotation before it signs.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
