"""Registered apps kept in each process's memory (IDP_CLIENT_CACHE_SECONDS): a change made in
this process applies at once, one made elsewhere within the cache time, and 0 turns it off."""

from __future__ import annotations

import base64

import pytest

from conftest import dispose, https_client, make_app
from identity.oidc import clients


def register(app) -> tuple[str, str]:
    with app.app_context():
        client, secret = clients.create(
            "Batch", [], grant_types=["client_credentials"], scopes=["openid"]
        )
        return client.client_id, secret


def grant(app, client_id: str, secret: str) -> int:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    response = https_client(app).post(
        "/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    return response.status_code


@pytest.fixture
def other(database_url, tmp_path, app):
    """A second process of the same service: another app object on the same database."""
    node = make_app(database_url, tmp_path, SECRET_KEY=app.config["SECRET_KEY"])
    yield node
    with node.app_context():
        from identity.extensions import db

        db.session.remove()
        db.engine.dispose()


def test_a_secret_rotated_in_this_process_is_refused_at_once(app):
    client_id, secret = register(app)
    assert grant(app, client_id, secret) == 200  # now cached
    with app.app_context():
        new = clients.rotate_secret(clients.find(client_id))
    assert grant(app, client_id, secret) == 401
    assert grant(app, client_id, new) == 200


def test_an_app_deleted_in_this_process_gets_nothing_more(app):
    client_id, secret = register(app)
    assert grant(app, client_id, secret) == 200
    with app.app_context():
        clients.delete(clients.find(client_id))
    assert grant(app, client_id, secret) == 401


def test_a_change_in_another_process_applies_when_the_cached_copy_expires(app, other):
    client_id, secret = register(app)
    assert grant(app, client_id, secret) == 200
    with other.app_context():
        new = clients.rotate_secret(clients.find(client_id))
    # Within IDP_CLIENT_CACHE_SECONDS this process still knows the app as it was...
    assert grant(app, client_id, secret) == 200
    # ...and reads it again once its copy is due (the deadline moved instead of waiting).
    cache = app.extensions["idp.client_cache"]
    cache[client_id] = (0.0, cache[client_id][1])
    assert grant(app, client_id, secret) == 401
    assert grant(app, client_id, new) == 200


@pytest.mark.parametrize("app_overrides", [{"CLIENT_CACHE_SECONDS": 0}])
def test_without_the_cache_a_change_elsewhere_applies_at_once(app, other):
    client_id, secret = register(app)
    assert grant(app, client_id, secret) == 200
    assert app.extensions["idp.client_cache"] == {}
    with other.app_context():
        clients.delete(clients.find(client_id))
    assert grant(app, client_id, secret) == 401


def test_unknown_client_ids_are_not_remembered(app):
    for n in range(20):
        assert grant(app, f"made-up-{n}", "x") == 401
    assert app.extensions["idp.client_cache"] == {}


def test_a_bad_cache_setting_is_refused(database_url, tmp_path):
    from identity import ConfigError

    with pytest.raises(ConfigError, match="IDP_CLIENT_CACHE_SECONDS"):
        dispose(make_app(database_url, tmp_path, CLIENT_CACHE_SECONDS=-1))
