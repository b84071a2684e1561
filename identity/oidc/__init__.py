"""The OpenID Connect provider: Authlib's authorization server with our keys and storage."""

from flask import Blueprint

bp = Blueprint("oidc", __name__)

# Routes register on bp; /end_session too, from identity.auth.end_session (it signs out
# through the funnel, which sits above the provider).
from identity.oidc import (  # noqa: E402,F401
    account_apps,
    authorization,
    views,
)
