"""The OpenID Connect provider: Authlib's authorization server with our keys and storage."""

from flask import Blueprint

bp = Blueprint("oidc", __name__)

from identity.oidc import (  # noqa: E402,F401  (routes register on bp)
    account_apps,
    authorization,
    views,
)
