"""The OpenID Connect provider. So far: the signing keys and their JWKS."""

from flask import Blueprint, jsonify

from identity.oidc import keys

bp = Blueprint("oidc", __name__)


@bp.get("/jwks.json")
def jwks():
    keys.ensure_keys()  # first start: publish keys before anything is signed with them
    response = jsonify(keys.jwks())
    # Apps may cache it: a key is published one rotation before it signs.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
