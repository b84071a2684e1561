"""The admin console's frame: who gets in, and the password asked again before dangerous
actions (identity.admin.guard)."""

from __future__ import annotations

from conftest import PASSWORD
from identity.auth import accounts
from identity.extensions import db


def make_admin(app, username="root"):
    with app.app_context():
        user = accounts.create_local(username, f"{username}@example.org", PASSWORD)
        user.is_admin = True
        db.session.commit()


def test_console_is_for_admins_only(app, browser, user):
    response = browser.get("/admin/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/admin/")
    browser.login()
    assert browser.get("/admin/").status_code == 403
    page = browser.get("/account").get_data(as_text=True)
    assert "Administration" not in page


def test_admin_sees_the_console_and_its_sections(app, browser):
    make_admin(app)
    browser.login("root")
    page = browser.get("/admin/").get_data(as_text=True)
    assert "<h1>Administration</h1>" in page
    assert 'href="/admin/ldap/test"' in page
    assert 'aria-current="page"' in page
    assert "Administration</a>" in browser.get("/account").get_data(as_text=True)


def test_reauthentication_accepts_only_the_admins_own_password(app, browser):
    from flask_login import login_user

    from identity.admin.guard import reauthenticated
    from identity.models import Event, User

    make_admin(app)
    with app.app_context():
        accounts.create_local("other", "other@example.org", "another long password here")
    with app.test_request_context():
        root = User.find("root")
        login_user(root)
        assert reauthenticated(PASSWORD) is True
        assert reauthenticated("wrong password") is False
        # Another account's valid password is not the admin's.
        assert reauthenticated("another long password here") is False
        failures = db.session.query(Event).filter_by(type="admin.reauth_failure").count()
        assert failures == 2
