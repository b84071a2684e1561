"""The provider's endpoints for apps, beside /authorize.

Discovery, keys, token, userinfo, introspection, revocation (Authlib validates and answers).
/end_session, which signs the person out, is identity.auth.end_session."""

from __future__ import annotations

import base64

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import MissingAuthorizationError
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from flask import current_app, jsonify, request

from identity import acr, scopes
from identity.extensions import csrf
from identity.oidc import authorize_rules, bp, client_cache, keys, subjects
from identity.oidc.claims import issuer, user_claims
from identity.oidc.client_rules import CLIENT_AUTH_METHODS
from identity.oidc.server import server
from identity.throttle import SLOW_DOWN, throttle


@bp.get("/.well-known/openid-configuration")
def discovery():
    # Built from settings alone: serialized once per process (as jsonify would).
    cached = current_app.extensions.get("idp.discovery")
    if cached is None:
        cached = current_app.json.response(_discovery()).get_data()
        current_app.extensions["idp.discovery"] = cached
    return current_app.response_class(
        cached, mimetype="application/json", headers={"Cache-Control": "public, max-age=300"}
    )


def _discovery() -> dict:
    base = issuer()
    algs = list(current_app.config["SIGNING_ALGORITHMS"])
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "userinfo_endpoint": f"{base}/userinfo",
        "jwks_uri": f"{base}/jwks.json",
        "introspection_endpoint": f"{base}/introspect",
        "revocation_endpoint": f"{base}/revoke",
        "end_session_endpoint": f"{base}/end_session",
        "scopes_supported": list(scopes.NAMES),
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
            *scopes.CLAIMS,
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


@bp.get("/jwks.json")
def jwks():
    # Apps may cache it: a key is published one rotation before it signs.
    return current_app.response_class(
        keys.jwks_json(),
        mimetype="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


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
