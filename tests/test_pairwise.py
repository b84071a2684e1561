"""Pairwise subject identifiers (OpenID Connect Core 8.1): an app registered `pairwise` sees a
pseudonym per sector (its redirect URIs' host), the same everywhere a `sub` appears, and
apps on other hosts cannot correlate people by it."""

from __future__ import annotations

import pytest
import requests
from oidc_rp import CALLBACK, App, Person, logout_receiver, register, sign_in_and_allow
from test_admin_apps import admin, edit_form, new_app_form, refused
from test_cli import run

from conftest import make_app
from identity.extensions import db
from identity.models import Client, User
from identity.oidc import client_rules, clients, subjects

__all__ = ["admin"]  # the fixture

OTHER_HOST = "https://elsewhere.example/callback"
SAME_HOST = "https://app.example/second-callback"


def _app(idp, name: str, redirect_uri: str = CALLBACK, **options) -> App:
    app = App(idp, register(idp, name, redirect_uris=[redirect_uri], **options))
    app.session.redirect_uri = redirect_uri
    return app


def _alice_subject(idp) -> str:
    with idp.app.app_context():
        return db.session.scalar(db.select(User.subject).filter_by(username="alice"))


def _sub(app: App, person: Person) -> str:
    return app.verify(app.redeem(sign_in_and_allow(person, app))["id_token"]).claims["sub"]


def test_apps_on_different_hosts_see_different_subs_and_one_app_always_the_same(idp):
    here = _app(idp, "here", subject_type="pairwise")
    same_host = _app(idp, "same-host", SAME_HOST, subject_type="pairwise")
    elsewhere = _app(idp, "elsewhere", OTHER_HOST, subject_type="pairwise")
    public = _app(idp, "public")
    person = Person(idp)

    first = _sub(here, person)
    assert _sub(here, Person(idp)) == first  # another sign-in, another browser: the same
    assert _sub(same_host, person) == first  # one sector, one pseudonym
    assert _sub(elsewhere, person) not in (first, _alice_subject(idp))
    assert _sub(public, person) == _alice_subject(idp)
    assert first != _alice_subject(idp)


def test_the_pairwise_sub_is_the_same_in_every_token_and_endpoint(idp):
    with logout_receiver() as receiver:
        app = _app(idp, "here", subject_type="pairwise", backchannel_logout_uri=receiver.url)
        person = Person(idp)
        tokens = app.redeem(sign_in_and_allow(person, app))
        sub = app.verify(tokens["id_token"]).claims["sub"]
        assert sub != _alice_subject(idp)

        access = app.verify(tokens["access_token"]).claims
        assert access["sub"] == sub
        userinfo = requests.get(
            f"{idp.url}/userinfo",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
            verify=idp.ca,
            timeout=10,
        ).json()
        assert userinfo["sub"] == sub
        for token in (tokens["access_token"], tokens["refresh_token"]):
            assert app.post("/introspect", {"token": token}).json()["sub"] == sub
        refreshed = app.post(
            "/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        ).json()
        assert app.verify(refreshed["access_token"]).claims["sub"] == sub

        # id_token_hint at /authorize: the signed-in person is the hinted one, no new sign-in.
        again = person.open(app.authorization_url(id_token_hint=tokens["id_token"]))
        assert "code" in app.callback_params(again), again.final

        # ...and at /end_session: signed out at once, no confirmation page.
        ended = person.open(f"{idp.url}/end_session?id_token_hint={tokens['id_token']}")
        assert "Sign out?" not in ended.text and "signed out" in ended.text.lower(), ended.text
        from identity.oidc.logout import wait_for_deliveries

        assert receiver.arrived.wait(10)
        wait_for_deliveries()
    (body,) = receiver.received
    assert app.verify(body["logout_token"]).claims["sub"] == sub


def test_discovery_lists_both_subject_types(idp):
    body = requests.get(
        f"{idp.url}/.well-known/openid-configuration", verify=idp.ca, timeout=10
    ).json()
    assert body["subject_types_supported"] == ["public", "pairwise"]


def test_the_pseudonym_is_stable_across_restarts_and_nodes(database_url, tmp_path):
    secret = "s" * 64
    client = Client(client_id="x")
    client.set_client_metadata({"redirect_uris": [CALLBACK], "subject_type": "pairwise"})
    person = User(subject="7c023b87-4484-4aed-947d-1adbb0b09784")
    seen = set()
    for node in ("a", "b"):
        app = make_app(database_url, tmp_path / node, SECRET_KEY=secret)
        with app.app_context():
            seen.add(subjects.subject_for(client, person))
    other = make_app(database_url, tmp_path / "c", SECRET_KEY="t" * 64)
    with other.app_context():
        assert subjects.subject_for(client, person) not in seen
    assert len(seen) == 1


def test_pairwise_needs_one_host_for_every_redirect_uri(app):
    with app.app_context():
        with pytest.raises(client_rules.ClientError, match="one host.*app.example, other.example"):
            clients.create(
                "two-hosts",
                ["https://app.example/cb", "https://other.example/cb"],
                subject_type="pairwise",
            )
        client, _ = clients.create(
            "one-host",
            ["https://app.example/cb", "https://app.example:8443/cb"],
            subject_type="pairwise",
        )
        with pytest.raises(client_rules.ClientError, match="would change every person's `sub`"):
            clients.update(client, redirect_uris=["https://moved.example/cb"])
        with pytest.raises(client_rules.ClientError, match="not one of public, pairwise"):
            clients.update(client, subject_type="secret")
        assert clients.update(client, subject_type="public") == {
            "subject_type": {"old": "pairwise", "new": "public"}
        }


def test_cli_registers_and_updates_the_subject_type(app):
    created = run(
        app,
        "client",
        "create",
        "--name",
        "wiki",
        "--redirect-uri",
        "https://wiki.example/cb",
        "--subject-type",
        "pairwise",
        "--json",
    )
    assert created.exit_code == 0, created.output
    assert '"subject_type": "pairwise"' in created.output
    updated = run(app, "client", "update", "wiki", "--subject-type", "public")
    assert updated.exit_code == 0 and "subject_type" in updated.output
    bad = run(
        app,
        "client",
        "update",
        "wiki",
        "--redirect-uri",
        "https://a.example/cb",
        "--redirect-uri",
        "https://b.example/cb",
        "--subject-type",
        "pairwise",
    )
    assert bad.exit_code != 0 and "one host" in bad.output and "Traceback" not in bad.output


def test_admin_page_chooses_pairwise_and_says_why_it_is_refused(app, admin):
    page = refused(admin.post("/admin/apps/new", new_app_form(subject_type="pairwise")))
    assert "one host" in page
    response = admin.post(
        "/admin/apps/new",
        new_app_form(redirect_uris="https://wiki.example.org/cb", subject_type="pairwise"),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        client = db.session.scalar(db.select(Client).filter_by(name="Wiki"))
        assert client.as_dict()["subject_type"] == "pairwise"
        client_id = client.client_id
    detail = admin.get(f"/admin/apps/{client_id}").get_data(as_text=True)
    assert '<option selected value="pairwise">' in detail
    saved = admin.post(f"/admin/apps/{client_id}", edit_form(app, client_id, subject_type="public"))
    assert saved.status_code == 302
    with app.app_context():
        assert (
            db.session.scalar(db.select(Client).filter_by(name="Wiki")).as_dict()["subject_type"]
            == "public"
        )
