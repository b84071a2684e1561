"""Sign-in pages: login, logout, registration, account (with its sessions and devices),
password change and reset."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from identity.auth import devices, mfa_views, passkey_views, step_up, views  # noqa: E402,F401  (routes register on bp)
