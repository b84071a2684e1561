"""An administrator's "Try a sign-in" with an upstream OpenID provider, through the real
routes against the upstream emulator: the callback shows what came back and what a real
sign-in would do, and signs nobody in, links and creates nothing; the trial mark is
single-use, the admin's own, and never becomes a sign-in."""

from __future__ import annotations

import pytest
from audit_events import event_data
from test_admin_console import make_admin
from test_oidc_upstream import approve, page, start
from test_social import signed_in_as, snapshot

from conftest import PASSWORD, Browser


@pytest.fixture
def app_overrides(upstream, upstream_entry):
    return upstream.app_settings(**upstream_entry)


@pytest.fixture
def admin(app, browser):
    make_admin(app)
    assert browser.login("root").status_code == 302
    return browser


def begin(admin: Browser, upstream_id: str = "corp", password: str = PASSWORD):
    return admin.post(
        f"/admin/upstreams/{upstream_id}/try",
        {"admin_password": password},
        token_from="/admin/upstreams",
    )


def trial(admin: Browser, upstream):
    r = begin(admin)
    assert r.status_code == 302, page(r)
    return admin.get(approve(upstream, r.headers["Location"]))


def session_of(browser: Browser) -> dict:
    with browser.client.session_transaction() as s:
        return dict(s)


def test_the_console_offers_a_trial_per_provider(admin):
    html = page(admin.get("/admin/upstreams"))
    assert 'action="/admin/upstreams/corp/try"' in html
    assert 'id="try-corp-password"' in html and "Try a sign-in" in html


def test_a_trial_shows_what_came_back_and_changes_nothing(app, admin, upstream):
    admin.get("/admin/upstreams")  # the form's CSRF token is in the session from here on
    before, session_before = snapshot(app), session_of(admin)
    r = trial(admin, upstream)
    assert r.status_code == 200, page(r)
    html = page(r)
    assert "Trial sign-in with Corp SSO" in html and "nobody was signed in" in html
    assert f"<code>{upstream.issuer}</code>" in html and "<code>u-1001</code>" in html
    assert "oscar" in html and "oscar@upstream.test" in html and "Oscar Upstream" in html
    assert "staff, ops" in html
    # Asserted, but this provider's entry does not allow trusting it.
    assert "not trusted as verified" in html and "<code>email_verified</code>: true" in html
    assert f"subject <code>{upstream.issuer}#u-1001</code>" in html
    assert "connector <code>oidc-corp</code>" in html
    assert "a new account would be created" in html
    # Nothing stored, nobody else signed in, the session as it was (the mark is spent).
    assert snapshot(app) == before
    assert session_of(admin) == session_before
    assert signed_in_as(admin) == "root"
    assert event_data(app, "admin.upstream_tried") == [
        {"upstream": "corp", "outcome": "ok", "account": None}
    ]
    assert event_data(app, "signin.failure") == []
    assert len(event_data(app, "signin.success")) == 1  # the admin's own sign-in
    (access,) = upstream.tokens
    assert access not in html and access not in repr(event_data(app, "admin.upstream_tried"))


@pytest.mark.parametrize("upstream_entry", [{"trust_email_verified": True}])
def test_a_trial_names_the_account_a_sign_in_would_reach(app, admin, upstream):
    someone = Browser(app.test_client())
    r = someone.get(approve(upstream, start(someone).headers["Location"]))
    assert r.status_code == 302 and signed_in_as(someone) == "oscar"
    r = trial(admin, upstream)
    html = page(r)
    assert "sign in to <a href=" in html and ">oscar</a>, linked to this identity" in html
    assert "trusted as verified" in html and "not trusted" not in html
    assert event_data(app, "admin.upstream_tried")[-1]["account"] == "oscar"
    assert signed_in_as(admin) == "root"


@pytest.mark.parametrize(
    "knob,value",
    [("bad_signature", True), ("id_token_issuer", "https://evil.example/op")],
)
def test_a_failed_trial_shows_the_reason(app, admin, upstream, knob, value):
    before = snapshot(app)
    setattr(upstream, knob, value)
    r = trial(admin, upstream)
    assert r.status_code == 502
    html = page(r)
    assert "Error: Trial sign-in with Corp SSO" in html
    assert "could not be verified" in html and "<code>bad_id_token</code>" in html
    assert snapshot(app) == before and signed_in_as(admin) == "root"
    assert [e["outcome"] for e in event_data(app, "admin.upstream_tried")] == ["bad_id_token"]
    assert event_data(app, "signin.failure") == []


def test_a_trial_that_cannot_start_says_why_on_the_console(app, admin, upstream):
    upstream.discovery_issuer = "https://evil.example/op"
    r = begin(admin)
    assert r.status_code == 502
    html = page(r)
    assert "The check failed: <code>wrong_issuer</code>" in html
    assert "Please tell your administrators" in html
    assert [e["outcome"] for e in event_data(app, "admin.upstream_tried")] == ["wrong_issuer"]


def test_the_admin_password_is_asked(app, admin, upstream):
    r = begin(admin, password="not-my-password")
    assert r.status_code == 400
    html = page(r)
    assert "Error: Sign-in providers" in html and 'id="try-corp-error"' in html
    r = admin.post("/admin/upstreams/corp/try", {"admin_password": PASSWORD}, csrf=False)
    assert r.status_code == 400
    assert "/op/.well-known/openid-configuration" not in upstream.requests
    assert begin(admin, "nope").status_code == 404


def test_only_admins_start_a_trial(app, browser, user, upstream):
    r = browser.post("/admin/upstreams/corp/try", {"admin_password": PASSWORD}, token_from="/login")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    browser.login()
    r = browser.post(
        "/admin/upstreams/corp/try", {"admin_password": PASSWORD}, token_from="/account"
    )
    assert r.status_code == 403
    assert "/op/.well-known/openid-configuration" not in upstream.requests


def test_a_copied_trial_callback_is_refused_elsewhere(app, admin, upstream):
    before = snapshot(app)
    r = begin(admin)
    callback = approve(upstream, r.headers["Location"])
    other = Browser(app.test_client())
    r = other.get(callback)
    assert r.status_code == 400 and "did not start here" in page(r)
    assert "Trial" not in page(r)
    assert snapshot(app) == before and signed_in_as(other) is None
    assert event_data(app, "admin.upstream_tried") == []


def test_the_trial_mark_is_single_use(app, admin, upstream):
    r = begin(admin)
    callback = approve(upstream, r.headers["Location"])
    assert admin.get(callback).status_code == 200
    r = admin.get(callback)
    assert r.status_code == 400 and "did not start here" in page(r)
    assert signed_in_as(admin) == "root"
    assert "upstream_trials" not in session_of(admin)


def test_a_trial_and_a_sign_in_never_swap(app, admin, upstream):
    """A normal start after a trial's does not turn the trial into a sign-in, and the trial
    mark is bound to its own authorization request."""
    tried = approve(upstream, begin(admin).headers["Location"])
    real = approve(upstream, start(admin).headers["Location"])
    r = admin.get(tried)
    assert r.status_code == 200 and "Trial sign-in with Corp SSO" in page(r)
    assert signed_in_as(admin) == "root"
    r = admin.get(real)
    assert r.status_code == 302
    assert signed_in_as(admin) == "oscar"  # the admin's browser, signed in for real


def test_a_trial_finished_after_signing_out_signs_nobody_in(app, admin, upstream):
    before = snapshot(app)
    callback = approve(upstream, begin(admin).headers["Location"])
    admin.logout()
    r = admin.get(callback)
    assert r.status_code == 400 and "did not start here" in page(r)
    assert signed_in_as(admin) is None and snapshot(app) == before


# -- a provider stored from the console and not enabled yet ------------------------------


def add_disabled(app, admin, upstream, issuer: str | None = None):
    from test_admin_upstreams import new_entry

    entry = new_entry(upstream, enabled="")
    if issuer:
        entry["issuer"] = issuer
    r = admin.post("/admin/upstreams/new", entry, token_from="/admin/upstreams/new")
    assert r.status_code == 302, page(r)


def test_a_disabled_provider_can_be_tried_and_stays_without_a_route(app, admin, upstream):
    add_disabled(app, admin, upstream)
    html = page(admin.get("/admin/upstreams"))
    assert "Partner ID: try before enabling" in html
    assert 'action="/admin/upstreams/partner/try"' in html
    before = snapshot(app)
    r = begin(admin, "partner")
    assert r.status_code == 302, page(r)
    callback = approve(upstream, r.headers["Location"])
    assert callback.startswith("/login/oidc/partner/callback?")
    # Without this admin's trial mark, the disabled provider has no callback at all.
    assert Browser(app.test_client()).get(callback).status_code == 404
    r = admin.get(callback)
    assert r.status_code == 200, page(r)
    assert "Trial sign-in with Partner ID" in page(
        r
    ) and "connector <code>oidc-partner</code>" in page(r)
    assert snapshot(app) == before and signed_in_as(admin) == "root"
    assert admin.get(callback).status_code == 404  # the mark is spent
    assert admin.get("/login/oidc/partner").status_code == 404  # still no button or route


def test_a_disabled_provider_that_cannot_start_says_why(app, admin, upstream):
    add_disabled(app, admin, upstream)
    upstream.discovery_issuer = "https://evil.example/op"
    r = begin(admin, "partner")
    assert r.status_code == 502
    assert "The check failed: <code>wrong_issuer</code>" in page(r)


def test_a_trial_refused_at_the_provider_says_so(app, admin, upstream):
    upstream.deny = True
    r = trial(admin, upstream)
    assert r.status_code == 403
    assert "You did not allow access" in page(r) and "<code>access_denied</code>" in page(r)
    assert [e["outcome"] for e in event_data(app, "admin.upstream_tried")] == ["access_denied"]
    assert signed_in_as(admin) == "root"


def test_a_trial_finished_by_an_admin_no_more_is_refused(app, admin, upstream):
    from identity.extensions import db
    from identity.models import User

    before = snapshot(app)
    callback = approve(upstream, begin(admin).headers["Location"])
    with app.app_context():
        db.session.scalar(db.select(User).where(User.username == "root")).is_admin = False
        db.session.commit()
    r = admin.get(callback)
    assert r.status_code == 400 and "did not start here" in page(r)
    assert "Trial" not in page(r) and "Sign-in providers" not in page(r)
    assert snapshot(app) == before and signed_in_as(admin) == "root"
    assert event_data(app, "admin.upstream_tried") == []
