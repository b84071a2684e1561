"""What an authorization request must be, beyond what Authlib checks: each parameter once,
`redirect_uri` on OpenID requests, no request objects, a response mode we support."""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.base import invalid_error_characters
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.core.grants.util import validate_form_post_redirect_uri

RESPONSE_MODES = ["query", "form_post"]
DEFAULT_RESPONSE_MODE = "query"

# RFC 6749 3.1 and OpenID Connect Core 3.1.2.1: a parameter sent twice is refused, whichever
# copy the app meant (Authlib checks the first five).
SINGLE_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "prompt",
    "response_mode",
    "max_age",
    "id_token_hint",
    "login_hint",
    "acr_values",
    "code_challenge",
    "code_challenge_method",
    "request",
    "request_uri",
    "display",
    "ui_locales",
    "claims",
)


class RequestNotSupportedError(OAuth2Error):
    """OpenID Connect Core 6.1: request objects are not supported."""

    error = "request_not_supported"
    description = "Request objects ('request') are not supported: send the parameters as such."


class RequestUriNotSupportedError(OAuth2Error):
    """OpenID Connect Core 6.2: request objects by reference are not supported."""

    error = "request_uri_not_supported"
    description = "'request_uri' is not supported: send the parameters as such."


class RegistrationNotSupportedError(OAuth2Error):
    """OpenID Connect Core 3.1.2.6 and 7.2.1: no registration by request parameter."""

    error = "registration_not_supported"
    description = "'registration' is not supported: apps are registered by an administrator."


def refuse_repeated_parameters(request) -> None:
    """Raise invalid_request when any authorization parameter appears more than once (no
    redirect: which `redirect_uri` or `state` the app meant is not known)."""
    datalist = request.payload.datalist
    for name in SINGLE_PARAMETERS:
        if len(datalist.get(name, [])) > 1:
            raise InvalidRequestError(f"Multiple '{name}' in request.")


def checked_redirect_uri(request, client) -> str:
    """The request's redirect URI, exactly one the app registered; required on OpenID
    requests even when the app registered one (Core 3.1.2.1). The refusal never repeats the
    URI: it may hold characters an error description cannot carry (RFC 6749 5.2)."""
    redirect_uri = request.payload.redirect_uri
    if not redirect_uri:
        if "openid" in (request.payload.scope or "").split():
            raise InvalidRequestError("'redirect_uri' is required on OpenID Connect requests.")
        redirect_uri = client.get_default_redirect_uri()
        if not redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        return redirect_uri
    if invalid_error_characters(redirect_uri) or not client.check_redirect_uri(redirect_uri):
        raise InvalidRequestError("This 'redirect_uri' is not registered for this app.")
    return redirect_uri


def check_request_features(grant, redirect_uri: str) -> None:
    """Refuse what this provider does not do, rather than ignore it: request objects (by value
    or reference), registration by parameter, response modes other than query and form_post.
    The errors go back to the app's (checked) redirect URI."""
    data = grant.request.payload.data
    try:
        if "request" in data:
            raise RequestNotSupportedError()
        if "request_uri" in data:
            raise RequestUriNotSupportedError()
        if "registration" in data:
            raise RegistrationNotSupportedError()
        mode = data.get("response_mode", DEFAULT_RESPONSE_MODE)
        if mode not in RESPONSE_MODES:
            raise InvalidRequestError(
                "'response_mode' must be one of: " + ", ".join(RESPONSE_MODES) + "."
            )
        validate_form_post_redirect_uri(grant, redirect_uri)
    except OAuth2Error as error:
        error.redirect_uri = redirect_uri
        raise


def response_mode(data) -> str:
    """The mode the answer is delivered in: form_post when asked for, else query (an
    unsupported mode was refused, and that refusal goes by query)."""
    return "form_post" if data.get("response_mode") == "form_post" else DEFAULT_RESPONSE_MODE
