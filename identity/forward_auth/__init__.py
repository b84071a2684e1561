"""Forward authentication: reverse proxies (nginx, Caddy, Traefik) ask /forward-auth whether a
request may reach the site it is for; access rules per host and path prefix."""

from flask import Blueprint

bp = Blueprint("forward_auth", __name__)

from identity.forward_auth import views  # noqa: E402,F401  (routes register on bp)
