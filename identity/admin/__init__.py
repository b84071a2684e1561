"""Administration: pages under /admin (admins only) and the command line."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.app_context_processor
def _admin_endpoints() -> dict:
    """The console's sections that exist (the navigation links only to those)."""
    from flask import current_app

    return {
        "admin_endpoints": {
            rule.endpoint
            for rule in current_app.url_map.iter_rules()
            if rule.endpoint.startswith("admin.")
        }
    }


# Routes register on bp: home and directory, users, apps, keys, audit log.
from identity.admin import apps, audit_log, keys_page, users, views  # noqa: E402,F401
