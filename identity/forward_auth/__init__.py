"""Forward authentication: reverse proxies (nginx, Caddy, Traefik) ask /forward-auth whether a
request may reach the site it is for; access rules per host and path prefix."""

from flask import Blueprint

bp = Blueprint("forward_auth", __name__)

from identity.forward_auth import cookie, views  # noqa: E402,F401  (routes register on bp)

bp.record_once(lambda state: cookie.expire_at_sign_out(state.app))
