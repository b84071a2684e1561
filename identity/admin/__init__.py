"""Administration: pages under /admin (admins only) and the command line."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from identity.admin import views  # noqa: E402,F401  (routes register on bp)
