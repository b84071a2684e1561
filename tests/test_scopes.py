"""One table of scopes (identity/scopes.py): discovery, the claims of a person, the consent and
account pages' words, the admin's app form and the `client` command all read it."""

from __future__ import annotations

import pytest

from identity import scopes
from identity.admin.app_forms import SCOPE_CHOICES
from identity.extensions import db
from identity.models import User
from identity.oidc.claims import user_claims
from identity.oidc.client_rules import ClientError, check_scopes


def test_discovery_offers_the_table(app):
    discovery = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert discovery["scopes_supported"] == list(scopes.NAMES)
    assert set(scopes.CLAIMS) <= set(discovery["claims_supported"])


def test_discovery_is_built_once_per_process_and_served_as_json(app, monkeypatch):
    from identity.oidc import views

    built, real = [], views._discovery
    monkeypatch.setattr(views, "_discovery", lambda: built.append(1) or real())
    client = app.test_client()
    first, second = (client.get("/.well-known/openid-configuration") for _ in range(2))
    assert len(built) == 1
    assert first.data == second.data
    assert first.mimetype == "application/json"
    assert first.headers["Cache-Control"] == "public, max-age=300"
    assert first.get_json()["issuer"] == app.config["ISSUER"].rstrip("/")


def test_a_person_s_claims_are_those_of_the_granted_scopes(app, user):
    with app.app_context():
        person = db.session.get(User, user.id)
        person.groups = ["staff"]
        everything = user_claims(person, " ".join(scopes.NAMES), None)
        assert set(everything) == {"sub", *scopes.CLAIMS}
        for row in scopes.SCOPES:
            only = user_claims(person, row.name, None)
            assert set(only) == {"sub", *row.claims}, row.name
        db.session.rollback()


def test_a_person_without_a_name_or_address_gets_no_empty_claims(app, db):
    with app.app_context():
        nobody = User(username="nobody", password_hash=None)
        db.session.add(nobody)
        db.session.flush()
        claims = user_claims(nobody, "openid profile email groups", None)
        assert set(claims) == {"sub", "preferred_username", "groups"}
        db.session.rollback()


def test_each_page_has_words_for_each_scope():
    assert [c.value for c in SCOPE_CHOICES] == list(scopes.NAMES)
    for row in scopes.SCOPES:
        assert row.consent and row.admin
        assert scopes.consent_text(row.name) == row.consent
    # The account page lists what an app may read, not that it knows who you are.
    assert scopes.short_text("openid") is None
    assert scopes.short_text("offline_access") == "offline access"
    assert scopes.short_text("unknown") == "unknown"


def test_registering_accepts_the_table_and_names_it_when_refusing():
    assert check_scopes(list(scopes.NAMES)) == list(scopes.NAMES)
    with pytest.raises(ClientError, match=", ".join(scopes.NAMES)):
        check_scopes(["openid", "phone"])
