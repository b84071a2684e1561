"""The admin page for upstream OpenID providers (/admin/upstreams): what is configured, the
redirect URI to register, and a live check of discovery and keys against a real upstream."""

from __future__ import annotations

import pytest
from audit_events import event_data
from cryptography.fernet import Fernet
from sqlalchemy import select
from test_admin_console import make_admin
from test_oidc_upstream import approve, close, start
from test_social import database_text, signed_in_as

from conftest import PASSWORD, Browser, https_client, make_app
from identity import audit
from identity.connectors import upstream_registry
from identity.extensions import db
from identity.models import Event, LinkedIdentity, UpstreamProvider, User


@pytest.fixture
def app_overrides(upstream, upstream_entry):
    return upstream.app_settings(**upstream_entry)


@pytest.fixture
def admin(app, browser):
    make_admin(app)
    assert browser.login("root").status_code == 302
    return browser


def text(r) -> str:
    return r.get_data(as_text=True)


def test_signed_out_and_non_admins_are_kept_out(app, browser, user):
    assert browser.get("/admin/upstreams").headers["Location"] == "/login?next=/admin/upstreams"
    browser.login()
    assert browser.get("/admin/upstreams").status_code == 403
    r = browser.post("/admin/upstreams/corp/check", token_from="/account")
    assert r.status_code == 403


def test_the_page_shows_each_upstream_and_never_its_secret(admin, upstream):
    html = text(admin.get("/admin/upstreams"))
    assert 'href="/admin/upstreams" aria-current="page"' in html
    assert "Corp SSO" in html and upstream.issuer in html and "idp-downstream" in html
    assert "https://idp.test/login/oidc/corp/callback" in html
    assert upstream.secret not in html
    assert "/op/.well-known/openid-configuration" not in upstream.requests  # nothing fetched


def test_check_reads_discovery_and_keys_now(app, admin, upstream):
    r = admin.post("/admin/upstreams/corp/check", token_from="/admin/upstreams")
    assert r.status_code == 200
    html = text(r)
    assert "all is well" in html and upstream.key.kid in html
    assert f"{upstream.issuer}/token" in html
    assert 'href="/admin/upstreams" aria-current="page"' in html
    assert upstream.requests.count("/op/jwks") == 1
    assert upstream.secret not in html


def test_a_failed_check_says_what_is_wrong(app, admin, upstream):
    upstream.discovery_issuer = "https://evil.example/op"
    r = admin.post("/admin/upstreams/corp/check", token_from="/admin/upstreams")
    assert r.status_code == 502
    html = text(r)
    assert (
        "The check failed: <code>wrong_issuer</code>" in html and "https://evil.example/op" in html
    )
    assert "Error: Sign-in providers" in html


def test_bad_requests(admin, upstream):
    assert (
        admin.post("/admin/upstreams/nope/check", token_from="/admin/upstreams").status_code == 404
    )
    assert admin.post("/admin/upstreams/corp/check", csrf=False).status_code == 400
    assert "/op/.well-known/openid-configuration" not in upstream.requests


@pytest.mark.parametrize("upstream_entry", [{"enabled": False}])
def test_no_upstream(admin, upstream):
    assert "No OpenID Connect provider is configured" in text(admin.get("/admin/upstreams"))


# -- providers added in the console --------------------------------------------------------


def new_entry(upstream, **changes) -> dict:
    return {
        "id": "partner",
        "label": "Partner ID",
        "issuer": upstream.issuer,
        "client_id": "idp-downstream",
        "client_secret": upstream.secret,
        "scopes": "openid email profile",
        "username_claim": "preferred_username",
        "groups_claim": "",
        "enabled": "y",
        "admin_password": PASSWORD,
        **changes,
    }


def add(admin, upstream, **changes):
    return admin.post(
        "/admin/upstreams/new", new_entry(upstream, **changes), token_from="/admin/upstreams/new"
    )


def stored_rows(app) -> list[tuple]:
    with app.app_context():
        return [
            (r.id, r.label, r.issuer, r.enabled)
            for r in db.session.scalars(select(UpstreamProvider))
        ]


def test_an_added_provider_gets_a_button_and_signs_people_in(app, admin, upstream):
    r = add(admin, upstream)
    assert r.status_code == 302 and r.headers["Location"] == "/admin/upstreams", text(r)
    assert "https://idp.test/login/oidc/partner/callback" in text(admin.get("/admin/upstreams"))
    assert stored_rows(app) == [("partner", "Partner ID", upstream.issuer, True)]
    # The secret is stored encrypted, and recorded nowhere in clear.
    assert upstream.secret not in database_text(app)
    assert [e["upstream"] for e in event_data(app, "upstream.added")] == ["partner"]
    admin.logout()
    assert "Continue with Partner ID" in text(admin.get("/login"))
    assert signed_in_as(admin) is None
    r = start(admin, "partner")
    r = admin.get(approve(upstream, r.headers["Location"]))
    assert r.status_code == 302, text(r)
    assert signed_in_as(admin) == "oscar"
    with app.app_context():
        links = db.session.scalars(select(LinkedIdentity.connector)).all()
        assert sorted(links) == ["local", "oidc-partner"]


def test_another_process_sees_an_added_provider(app, admin, upstream, database_url, tmp_path):
    # Every node shares SECRET_KEY (and KEY_ENCRYPTION_KEY): the secret's key comes from it.
    other = make_app(
        database_url,
        tmp_path / "other",
        CLIENT_CACHE_SECONDS=0,
        SECRET_KEY=app.config["SECRET_KEY"],
    )
    try:
        assert "Partner ID" not in text(Browser(https_client(other)).get("/login"))
        assert add(admin, upstream).status_code == 302
        assert "Continue with Partner ID" in text(Browser(https_client(other)).get("/login"))
    finally:
        close(other)


@pytest.mark.parametrize(
    "changes,field,words",
    [
        ({"issuer": "http://op.example"}, "issuer", "Must be an https:// URL"),
        ({"id": "Bad Id"}, "id", "Must be 1 to 27 characters"),
        ({"id": "corp"}, "id", "is set in IDP_OIDC_UPSTREAMS"),
        ({"scopes": "email"}, "scopes", "Must be a list of scopes that includes"),
        ({"client_secret": ""}, "client_secret", "Is required"),
        ({"groups_claim": "a b"}, "groups_claim", "Must be a claim name"),
        ({"admin_password": "wrong"}, "admin_password", ""),
        ({"admin_password": ""}, "admin_password", "Enter your password to confirm"),
        ({"label": "x" * 61}, "label", "At most 60"),
    ],
)
def test_bad_input_is_refused_on_its_field(app, admin, upstream, changes, field, words):
    r = add(admin, upstream, **changes)
    assert r.status_code == 400
    html = text(r)
    assert f'id="{field}-error"' in html and words in html, html
    assert stored_rows(app) == []


def test_an_id_is_added_once(app, admin, upstream):
    assert add(admin, upstream).status_code == 302
    r = add(admin, upstream, label="Again")
    assert r.status_code == 400 and "The id &#39;partner&#39; is taken" in text(r)
    assert stored_rows(app) == [("partner", "Partner ID", upstream.issuer, True)]


def edit(admin, **changes):
    path = "/admin/upstreams/partner/edit"
    data = {k: v for k, v in new_entry(admin.upstream, **changes).items() if k != "id"}
    return admin.post(path, data, token_from=path)


def test_change_keeps_the_secret_when_left_empty_and_disable_hides_it(app, admin, upstream):
    admin.upstream = upstream
    assert add(admin, upstream).status_code == 302
    page = text(admin.get("/admin/upstreams/partner/edit"))
    assert upstream.secret not in page and 'value="Partner ID"' in page
    r = edit(admin, label="Partner SSO", client_secret="")
    assert r.status_code == 302, text(r)
    assert [e["changes"] for e in event_data(app, "upstream.changed")] == [["label"]]
    visitor = Browser(https_client(app))
    assert "Continue with Partner SSO" in text(visitor.get("/login"))
    r = visitor.get(approve(upstream, start(visitor, "partner").headers["Location"]))
    assert r.status_code == 302 and signed_in_as(visitor) == "oscar"  # the kept secret works
    r = edit(admin, label="Partner SSO", enabled="")
    assert r.status_code == 302
    assert stored_rows(app) == [("partner", "Partner SSO", upstream.issuer, False)]
    visitor = Browser(https_client(app))
    assert "Partner SSO" not in text(visitor.get("/login"))
    assert start(visitor, "partner").status_code == 404
    listing = text(admin.get("/admin/upstreams"))
    assert "Disabled" in listing and "Change or enable" in listing
    assert edit(admin, label="Partner SSO").status_code == 302  # enabled again
    assert start(visitor, "partner").status_code == 302


def test_changes_are_checked_too(app, admin, upstream):
    admin.upstream = upstream
    assert add(admin, upstream).status_code == 302
    r = edit(admin, issuer="https://op.example/?x=1")
    assert r.status_code == 400 and "without query or fragment" in text(r)
    assert stored_rows(app) == [("partner", "Partner ID", upstream.issuer, True)]


def test_environment_providers_and_unknown_ids_cannot_be_edited(admin, upstream):
    assert admin.get("/admin/upstreams/corp/edit").status_code == 404
    assert admin.get("/admin/upstreams/nope/edit").status_code == 404


def test_non_admins_cannot_add_or_edit(app, browser, user, upstream):
    browser.login()
    assert browser.get("/admin/upstreams/new").status_code == 403
    r = browser.post("/admin/upstreams/new", new_entry(upstream), token_from="/account")
    assert r.status_code == 403
    assert stored_rows(app) == []


def test_a_secret_that_cannot_be_decrypted_is_asked_again(app, admin, upstream):
    """After KEY_ENCRYPTION_KEY or SECRET_KEY changed, a stored secret cannot be read: the
    provider has no button, the console says so, and asks for the secret again."""
    admin.upstream = upstream
    assert add(admin, upstream).status_code == 302
    with app.app_context():
        row = db.session.get(UpstreamProvider, "partner")
        row.client_secret = Fernet(Fernet.generate_key()).encrypt(b"old").decode()
        db.session.commit()
    with app.app_context():
        upstream_registry.changed()
    visitor = Browser(https_client(app))
    assert "Partner ID" not in text(visitor.get("/login"))
    listing = text(admin.get("/admin/upstreams"))
    assert "Not usable" in listing and "/admin/upstreams/partner/edit" in listing
    r = edit(admin, client_secret="")
    assert r.status_code == 400 and "Cannot be read any more" in text(r)
    assert edit(admin, client_secret=upstream.secret).status_code == 302
    assert "Continue with Partner ID" in text(visitor.get("/login"))


def test_a_stored_provider_goes_by_its_label_on_every_page_even_disabled(app, admin, upstream):
    """The registry names oidc-<id> by its label: the account page, the admin's user and
    audit pages; still after the provider is disabled (its links and events remain)."""
    admin.upstream = upstream
    assert add(admin, upstream).status_code == 302
    visitor = Browser(https_client(app))
    r = visitor.get(approve(upstream, start(visitor, "partner").headers["Location"]))
    assert r.status_code == 302 and signed_in_as(visitor) == "oscar"
    with app.app_context():
        oscar = db.session.scalar(select(User).where(User.username == "oscar")).id
    for enabled in ("y", ""):
        assert edit(admin, enabled=enabled).status_code == 302
        pages = {
            "account": text(visitor.get("/account")),
            "user": text(admin.get(f"/admin/users/{oscar}")),
            "audit": text(admin.get("/admin/audit")),
        }
        for name, html in pages.items():
            assert "Partner ID" in html, (enabled, name)
            assert "oidc-partner" not in html, (enabled, name)


def test_reading_stored_providers_leaves_the_requests_transaction_alone(tmp_path, caplog):
    """The registry reads the stored providers in the middle of requests: when that read
    fails (here the table is missing: the database is not upgraded yet), the request's own
    unsaved work survives and the page still works."""
    app = make_app(f"sqlite:///{tmp_path / 'old.db'}", tmp_path)
    with app.app_context():
        tables = [t for t in db.metadata.sorted_tables if t.name != "oidc_upstreams"]
        db.metadata.create_all(db.engine, tables=tables)
        audit.record("test.pending", None)  # unsaved work of this request
        assert app.extensions["idp.connectors"].redirect() == []
        db.session.commit()
        assert [e.type for e in db.session.scalars(select(Event).order_by(Event.id))] == [
            "test.pending"
        ]
    assert "stored upstream providers could not be read" in caplog.text
    assert Browser(https_client(app)).get("/login").status_code == 200
    close(app)  # not dispose(): it empties every table, and this one is missing


def test_the_command_line_lists_and_checks_a_stored_provider(app, admin, upstream):
    assert add(admin, upstream).status_code == 302
    runner = app.test_cli_runner()
    r = runner.invoke(args=["upstream", "list"])
    assert r.exit_code == 0 and "partner" in r.output and "Partner ID" in r.output
    assert upstream.secret not in r.output
    r = runner.invoke(args=["upstream", "check", "partner"])
    assert r.exit_code == 0 and "partner: discovery and keys OK" in r.output, r.output
