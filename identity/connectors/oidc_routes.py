"""The two routes every upstream OpenID provider shares (/login/oidc/<id> and its callback):
the connector is looked up in the registry, so providers added in the admin console need no
new route; both return through the connector's handler (identity.auth.finalize)."""

from __future__ import annotations

from flask import Blueprint, abort

from identity.connectors.base import RedirectFailure
from identity.connectors.registry import registry

bp = Blueprint("oidc_upstream", __name__, url_prefix="/login/oidc")


def register(app) -> None:
    """Register the routes once, whichever connector asks first."""
    if bp.name not in app.blueprints:
        app.register_blueprint(bp)


def _connector(upstream: str, *, trial: bool = False):
    from identity.connectors.oidc_upstream import UpstreamConnector

    # Only an id that can be one: anything else is a 404 without a look at the registry.
    found = registry().get(f"oidc-{upstream}") if len(upstream) <= 27 else None
    if found is None and trial and len(upstream) <= 27:
        # A stored provider without a button (disabled) answers an administrator's trial only.
        from identity.connectors.upstream_registry import source

        stored = source()
        if stored.handler.trial_pending(f"oidc-{upstream}"):
            found = stored.trial_connector(upstream)
    if not isinstance(found, UpstreamConnector) or found.handler is None:
        abort(404)
    return found


@bp.get("/<upstream>")
def login(upstream: str):
    connector = _connector(upstream)
    connector.handler.start(connector)
    try:
        return connector.start()
    except RedirectFailure as failed:
        return connector.handler.finish(connector, failed)


@bp.get("/<upstream>/callback")
def callback(upstream: str):
    connector = _connector(upstream, trial=True)
    try:
        result = connector.finish()
    except RedirectFailure as failed:
        result = failed
    return connector.handler.finish(connector, result)
