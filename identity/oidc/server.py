"""The authorization server, wired: our grants, token generator, endpoints and protector.

Authlib's server with the grants (oidc.grants), the token generator and storage
(oidc.tokens), the endpoints that read our tokens back (oidc.validation), the issuer
parameter, and the resource protector of /userinfo."""

from __future__ import annotations

import warnings

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.base import invalid_error_characters
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Flask, current_app
from joserfc.errors import SecurityWarning

from identity import scopes
from identity.models import Client
from identity.oidc import client_cache
from identity.oidc.claims import issuer
from identity.oidc.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    OpenIDCodeExtension,
    RefreshTokenGrant,
    S256Challenge,
)
from identity.oidc.tokens import AccessTokenGenerator, expires_in, new_refresh_token, save_token
from identity.oidc.validation import AccessTokenValidator, EndSession, Introspection, Revocation

# RFC 9864 renames "EdDSA" to "Ed25519"; relying parties know the old name, and an admin
# chooses it per app (--id-token-alg), so the warning at every token is noise.
warnings.filterwarnings("ignore", "EdDSA is deprecated via RFC 9864", SecurityWarning)


def server() -> AuthorizationServer:
    return current_app.extensions["idp.oauth"]


class Server(AuthorizationServer):
    def get_authorization_grant(self, request):
        """Authlib's, except that a response_type no error description can repeat (RFC 6749
        5.2: printable ASCII, no quote or backslash) is refused without repeating it."""
        if invalid_error_characters(request.payload.response_type or ""):
            raise InvalidRequestError("'response_type' must be 'code'.")
        return super().get_authorization_grant(request)


class Issuer(IssuerParameter):
    def get_issuer(self) -> str:
        return issuer()


def init_app(app: Flask) -> AuthorizationServer:
    """One authorization server per app (its settings and keys are the app's)."""

    def query_client(client_id: str) -> Client | None:
        if not client_id or len(client_id) > 48 or not client_id.isprintable():
            return None  # PostgreSQL refuses NUL in a string: never ask it
        return client_cache.lookup(client_id)

    client_cache.init_app(app)
    authorization = Server(
        app, query_client=query_client, save_token=lambda token, request: save_token(token, request)
    )
    authorization.scopes_supported = list(scopes.NAMES)
    generator = AccessTokenGenerator(
        issuer=app.config["ISSUER"].rstrip("/"),
        alg=app.config["SIGNING_ALGORITHMS"][0],
        refresh_token_generator=new_refresh_token,
        expires_generator=expires_in,
    )
    authorization.register_token_generator("default", generator)
    authorization.register_grant(
        AuthorizationCodeGrant, [S256Challenge(required=True), OpenIDCodeExtension()]
    )
    authorization.register_grant(RefreshTokenGrant)
    authorization.register_grant(ClientCredentialsGrant)
    authorization.register_endpoint(Introspection)
    authorization.register_endpoint(Revocation)
    authorization.register_endpoint(EndSession)
    issuer_parameter = Issuer()
    authorization.register_extension(issuer_parameter)
    protector = ResourceProtector()
    protector.register_token_validator(AccessTokenValidator())
    app.extensions["idp.oauth"] = authorization
    app.extensions["idp.oauth.protector"] = protector
    app.extensions["idp.oauth.issuer_parameter"] = issuer_parameter
    return authorization
