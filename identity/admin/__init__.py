"""Administration: pages under /admin (admins only) and the command line."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")


# Routes register on bp: home, directory, users (and their names), apps, keys, sign-in
# providers, audit log, forward-auth rules.
from identity.admin import (  # noqa: E402,F401
    apps,
    audit_log,
    forward_auth_page,
    keys_page,
    overview,
    upstreams_page,
    user_names,
    users,
    views,
)
