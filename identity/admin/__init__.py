"""Administration: pages under /admin (admins only) and the command line."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")


# Routes register on bp: home, directory, users, apps, keys, audit log.
from identity.admin import apps, audit_log, keys_page, overview, users, views  # noqa: E402,F401
