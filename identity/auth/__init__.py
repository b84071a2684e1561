"""Sign-in pages: login, logout, registration, account, password change and reset."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from identity.auth import views  # noqa: E402,F401  (routes register on bp)
