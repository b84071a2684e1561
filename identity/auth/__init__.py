"""Sign-in pages: login, logout, registration, account (with its sessions and devices),
password change and reset."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

# Routes register on bp (end_session on the provider's blueprint, identity.oidc.bp).
from identity.auth import (  # noqa: E402,F401
    account_views,
    devices,
    end_session,
    mfa_views,
    passkey_views,
    step_up,
    views,
)
