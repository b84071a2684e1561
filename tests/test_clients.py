"""Registering apps: `flask --app idp client …`."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from identity.extensions import db
from identity.models import Client, Event


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["client", *args])


def apps(app) -> list[tuple]:
    with app.app_context():
        return [
            (c.client_id, c.name, c.client_secret, c._client_metadata)
            for c in db.session.scalars(select(Client).order_by(Client.id))
        ]


def create(app, *args):
    r = cli(app, "create", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_confidential_app_gets_a_secret_shown_once_and_stored_hashed(app):
    out = create(
        app,
        "--name",
        "Wiki",
        "--redirect-uri",
        "https://wiki.example.org/cb",
        "--post-logout-redirect-uri",
        "https://wiki.example.org/",
        "--backchannel-logout-uri",
        "https://wiki.example.org/logout",
    )
    assert out["public"] is False and len(out["client_secret"]) >= 40
    assert out["grant_types"] == ["authorization_code", "refresh_token"]
    assert out["response_types"] == ["code"] and out["scope"] == "openid profile email"
    assert out["token_endpoint_auth_method"] == "client_secret_basic"
    with app.app_context():
        client = db.session.scalar(select(Client))
        assert out["client_secret"] not in (client.client_secret or "")
        assert out["client_secret"] not in client._client_metadata
        assert client.check_client_secret(out["client_secret"])
        assert not client.check_client_secret(out["client_secret"] + "x")
        assert not client.check_client_secret("")
        # Exact redirect URI matching (Authlib's check): no prefix, no case folding.
        assert client.check_redirect_uri("https://wiki.example.org/cb")
        for other in (
            "https://wiki.example.org/cb/",
            "https://wiki.example.org/cb?x=1",
            "https://WIKI.example.org/cb",
            "https://wiki.example.org/c",
        ):
            assert not client.check_redirect_uri(other)
        events = [e.data for e in db.session.scalars(select(Event).order_by(Event.id))]
    assert out["client_secret"] not in json.dumps(events)
    shown = cli(app, "show", "Wiki")
    assert out["client_secret"] not in shown.output and "Wiki" in shown.output


def test_public_app_has_no_secret(app):
    out = create(app, "--name", "SPA", "--public", "--redirect-uri", "http://127.0.0.1:8080/cb")
    assert out["public"] is True and "client_secret" not in out
    assert out["token_endpoint_auth_method"] == "none"
    with app.app_context():
        client = db.session.scalar(select(Client))
        assert client.client_secret is None and not client.check_client_secret("anything")


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5001/cb",
        "http://[::1]/cb",
        "http://localhost:3000/auth/callback",
        "https://app.example.org/cb?tenant=1",
    ],
)
def test_allowed_redirect_uris(app, uri):
    assert create(app, "--name", "A", "--redirect-uri", uri)["redirect_uris"] == [uri]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--name", "X", "--redirect-uri", "http://app.example.org/cb"],
            "http:// is allowed on loopback only",
        ),
        (
            ["--name", "X", "--redirect-uri", "https://*.example.org/cb"],
            "wildcards are not allowed",
        ),
        (["--name", "X", "--redirect-uri", "https://app.example.org/cb#frag"], "fragment"),
        (["--name", "X", "--redirect-uri", "https://user:pw@app.example.org/cb"], "user name"),
        (["--name", "X", "--redirect-uri", "/relative/cb"], "must be an absolute https:// URI"),
        (["--name", "X", "--redirect-uri", "javascript:alert(1)"], "must be an absolute https://"),
        (["--name", "X", "--redirect-uri", "https://app.example.org/c b"], "contains spaces"),
        (["--name", "X", "--redirect-uri", "https://a.example/" + "x" * 2100], "too long"),
        (["--name", "X", "--redirect-uri", "https://a.example/\x00"], "control characters"),
        (["--name", "X"], "at least one is needed for authorization_code"),
        (["--name", "", "--redirect-uri", "https://a.example/cb"], "--name: 1 to 100"),
        (["--name", "n" * 101, "--redirect-uri", "https://a.example/cb"], "--name: 1 to 100"),
        (
            ["--name", "X", "--redirect-uri", "https://a.example/cb", "--grant-type", "password"],
            "password not supported",
        ),
        (
            ["--name", "X", "--redirect-uri", "https://a.example/cb", "--grant-type", "implicit"],
            "implicit not supported",
        ),
        (
            ["--name", "X", "--public", "--grant-type", "client_credentials"],
            "needs a confidential app",
        ),
        (["--name", "X", "--grant-type", "refresh_token"], "goes with authorization_code"),
        (
            ["--name", "X", "--redirect-uri", "https://a.example/cb", "--scope", "admin"],
            "admin not supported",
        ),
        (
            [
                "--name",
                "X",
                "--redirect-uri",
                "https://a.example/cb",
                "--post-logout-redirect-uri",
                "http://evil.example/",
            ],
            "--post-logout-redirect-uri",
        ),
        (
            [
                "--name",
                "X",
                "--redirect-uri",
                "https://a.example/cb",
                "--backchannel-logout-uri",
                "ftp://a.example/",
            ],
            "--backchannel-logout-uri",
        ),
    ],
)
def test_bad_registrations_store_nothing(app, args, message):
    r = cli(app, "create", *args)
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert apps(app) == []


def test_duplicate_name(app):
    create(app, "--name", "Wiki", "--redirect-uri", "https://a.example/cb")
    before = apps(app)
    r = cli(app, "create", "--name", "Wiki", "--redirect-uri", "https://b.example/cb")
    assert r.exit_code == 1 and "an app named 'Wiki' exists already" in r.output
    assert apps(app) == before


def test_client_credentials_only_app_needs_no_redirect_uri(app):
    out = create(app, "--name", "Batch", "--grant-type", "client_credentials")
    assert out["redirect_uris"] == [] and out["response_types"] == []


def test_list_show_rotate_delete(app):
    out = create(app, "--name", "Wiki", "--redirect-uri", "https://a.example/cb")
    r = cli(app, "list")
    assert "Wiki" in r.output and "confidential" in r.output
    (line,) = cli(app, "list", "--json").output.splitlines()
    assert json.loads(line)["client_id"] == out["client_id"]
    r = cli(app, "rotate-secret", out["client_id"], "--json")
    new = json.loads(r.output)["client_secret"]
    with app.app_context():
        client = db.session.scalar(select(Client))
        assert client.check_client_secret(new) and not client.check_client_secret(
            out["client_secret"]
        )
    r = cli(app, "delete", "Wiki")
    assert r.exit_code == 0 and apps(app) == []


@pytest.mark.parametrize("command", ["show", "delete", "rotate-secret"])
def test_unknown_app(app, command):
    r = cli(app, command, "nope")
    assert r.exit_code == 1 and "no such app: nope" in r.output


def test_public_app_has_no_secret_to_rotate(app):
    create(app, "--name", "SPA", "--public", "--redirect-uri", "http://localhost/cb")
    r = cli(app, "rotate-secret", "SPA")
    assert r.exit_code == 1 and "is a public app" in r.output


def test_client_ids_never_start_with_a_dash(app):
    # One in 64 random ids did, and the CLI then read it as an option.
    from identity.oidc.clients import new_client_id

    ids = [new_client_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids) and {len(i) for i in ids} == {24}


@pytest.mark.parametrize(
    "kwargs, option, message",
    [
        (
            {"redirect_uris": ["http://a.example/cb"]},
            "--redirect-uri",
            "--redirect-uri: 'http://a.example/cb': http:// is allowed on loopback only "
            "(127.0.0.1, [::1], localhost); use https://",
        ),
        (
            {"redirect_uris": ["https://a.example/cb"], "scopes": ["admin"]},
            "--scope",
            "--scope: admin not supported; use openid, profile, email, groups, offline_access",
        ),
        (
            {"redirect_uris": [], "grant_types": ["client_credentials"], "public": True},
            "--grant-type",
            "--grant-type client_credentials needs a confidential app (without --public): a "
            "public app cannot keep a secret",
        ),
        (
            {"redirect_uris": ["https://a.example/cb", "https://b.example/cb"]}
            | {"subject_type": "pairwise"},
            "--subject-type",
            "--subject-type pairwise: every redirect URI must be on one host (the sector whose "
            "people get one pseudonym each); these are on a.example, b.example",
        ),
        (
            {"redirect_uris": ["https://a.example/cb"], "id_token_alg": "none"},
            "--id-token-alg",
            "--id-token-alg: 'none' is not one of IDP_SIGNING_ALGORITHMS (RS256, ES256, EdDSA)",
        ),
    ],
)
def test_registration_errors_name_the_setting_they_are_about(app, kwargs, option, message):
    # The admin pages put `detail` on the field of `option`: they never parse the message,
    # which stays the command line's (option, then what is wrong).
    from identity.oidc import clients
    from identity.oidc.client_rules import ClientError

    with app.app_context(), pytest.raises(ClientError) as refused:
        clients.create("X", **kwargs)
    assert refused.value.option == option
    assert str(refused.value) == message
    assert message.endswith(refused.value.detail) and not refused.value.detail.startswith("-")
