"""Accounts in the admin console (/admin/users) and on the command line (`flask --app idp
user …`): every action works for an admin, is refused to others, asks for the admin's
password when it is dangerous, is audited with who did it, and bad input changes nothing."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from audit_events import events
from sqlalchemy import select

from conftest import PASSWORD, Browser, https_client
from identity import mail
from identity.auth import accounts
from identity.extensions import db
from identity.models import Event, LinkedIdentity, PasswordReset, Token, User

NEW = "a brand new long passphrase"
OTHER = "another long password here"
WRONG_ADMIN = "That is not your password."


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def admin(app, browser, user) -> SimpleNamespace:
    """root, an administrator, signed in on `browser`; alice (the `user` fixture) exists."""
    with app.app_context():
        root = accounts.create_local("root", "root@example.org", PASSWORD, name="Root Admin")
        root.is_admin = True
        db.session.commit()
        root_id = root.id
    assert browser.login("root").status_code == 302
    return SimpleNamespace(id=root_id, username="root", alice=user)


@pytest.fixture
def outbox(monkeypatch) -> list[dict]:
    """Mail that would have left, captured instead."""
    sent: list[dict] = []

    def send(to, subject, body):
        sent.append({"to": to, "subject": subject, "body": body})
        done: Future = Future()
        done.set_result(None)
        return done

    monkeypatch.setattr(mail, "send", send)
    return sent


def snapshot(app) -> dict:
    """Everything an admin action could change (the audit log's admin.user_* part too)."""
    with app.app_context():
        return {
            "users": [
                (
                    u.id,
                    u.username,
                    u.email,
                    u.name,
                    u.is_admin,
                    u.disabled,
                    u.password_hash,
                    u.session_epoch,
                )
                for u in db.session.scalars(select(User).order_by(User.id))
            ],
            "links": sorted(
                (link.user_id, link.connector, link.subject)
                for link in db.session.scalars(select(LinkedIdentity))
            ),
            "resets": [(r.id, r.used_at) for r in db.session.scalars(select(PasswordReset))],
            "tokens": [
                (t.id, t.access_token_revoked_at, t.refresh_token_revoked_at)
                for t in db.session.scalars(select(Token))
            ],
            "admin_events": [
                e.type
                for e in db.session.scalars(
                    select(Event).where(Event.type.like("admin.user%")).order_by(Event.id)
                )
            ],
        }


def all_event_text(app) -> str:
    with app.app_context():
        return json.dumps([e.data for e in db.session.scalars(select(Event).order_by(Event.id))])


def get_user(app, username: str) -> User | None:
    with app.app_context():
        found = User.find(username, by_email=False)
        if found is not None:
            _ = found.links
            db.session.expunge_all()
        return found


def add_token(app, user_id: int) -> int:
    """A live token of the account, as the token endpoint would have stored it."""
    with app.app_context():
        now = int(time.time())
        row = Token(
            client_id="some-app",
            token_type="Bearer",
            access_token=f"jti-{now}-{user_id}",
            refresh_token=f"digest-{now}-{user_id}",
            scope="openid",
            issued_at=now,
            expires_in=600,
            user_id=user_id,
            grant_id="code-1",
            sid="sid-1",
            refresh_token_expires_at=now + 3600,
        )
        db.session.add(row)
        db.session.commit()
        return row.id


def token_revoked(app, token_id: int) -> bool:
    with app.app_context():
        return db.session.get(Token, token_id).is_revoked()


def add_link(app, username: str, connector: str, subject: str) -> int:
    with app.app_context():
        u = User.find(username, by_email=False)
        link = LinkedIdentity(user_id=u.id, connector=connector, subject=subject)
        db.session.add(link)
        db.session.commit()
        return link.id


def link_id(app, username: str, connector: str) -> int:
    with app.app_context():
        u = User.find(username, by_email=False)
        return next(link.id for link in u.links if link.connector == connector)


def signed_in_client(app, username="alice", password=PASSWORD) -> Browser:
    other = Browser(https_client(app))
    assert other.login(username, password).status_code == 302
    assert other.get("/account").status_code == 200
    return other


def text(response) -> str:
    return response.get_data(as_text=True)


# -- who gets in --------------------------------------------------------------------------

PAGES = [
    "/admin/users",
    "/admin/users/new",
    "/admin/users/{id}",
    "/admin/users/{id}/disable",
    "/admin/users/{id}/password",
    "/admin/users/{id}/reset-link",
    "/admin/users/{id}/sessions",
    "/admin/users/{id}/admin",
    "/admin/users/{id}/methods/{link}/remove",
]
POSTS = [p for p in PAGES if p not in ("/admin/users", "/admin/users/{id}")] + [
    "/admin/users/{id}/enable"
]


def _paths(app, user, paths):
    link = link_id(app, user.username, "local")
    return [p.format(id=user.id, link=link) for p in paths]


def test_signed_out_visitors_are_sent_to_sign_in(app, browser, user):
    before = snapshot(app)
    for path in _paths(app, user, PAGES):
        r = browser.get(path)
        assert r.status_code == 302, path
        assert r.headers["Location"].startswith("/login?next=/admin/users"), path
    for path in _paths(app, user, POSTS):
        r = browser.post(path, {"admin_password": PASSWORD}, token_from="/login")
        assert r.status_code == 302 and "/login?next=" in r.headers["Location"], path
    assert snapshot(app) == before


def test_non_admins_get_403(app, browser, user):
    browser.login()
    before = snapshot(app)
    for path in _paths(app, user, PAGES):
        assert browser.get(path).status_code == 403, path
    for path in _paths(app, user, POSTS):
        r = browser.post(path, {"admin_password": PASSWORD}, token_from="/account")
        assert r.status_code == 403, path
    assert snapshot(app) == before


def test_admin_sees_the_users_section(app, browser, admin):
    page = text(browser.get("/admin/"))
    assert 'href="/admin/users"' in page and 'href="/admin/audit"' in page
    page = text(browser.get(f"/admin/users/{admin.id}"))
    # The section stays marked on the pages below it.
    assert '<a href="/admin/users" aria-current="page">Users</a>' in page


# -- the list -----------------------------------------------------------------------------


def test_list_shows_status_methods_and_last_sign_in(app, browser, admin):
    with app.app_context():
        bob = accounts.create_local("bob", "bob@example.org", OTHER, name="Bob <Builder>")
        bob.disabled = True
        db.session.add(LinkedIdentity(user_id=bob.id, connector="google", subject="g-1"))
        db.session.commit()
    page = text(browser.get("/admin/users"))
    assert "3 accounts" in page
    rows = [r for r in re.findall(r"<tr>(.*?)</tr>", page, re.S) if 'scope="row"' in r]
    row = {re.search(r">([a-z]+)</a></th>", r).group(1): r for r in rows}
    assert set(row) == {"alice", "bob", "root"}
    assert "Disabled" in row["bob"] and "Password, Google" in row["bob"]
    assert "never" in row["bob"] and "Bob &lt;Builder&gt;" in row["bob"]
    assert "Active" in row["root"] and ">Admin<" in row["root"]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d</time>", row["root"])  # signed in just now
    assert "Admin" not in row["alice"] and "alice@example.org" in row["alice"].lower()


@pytest.mark.parametrize(
    "q,found",
    [
        ("ALI", {"alice"}),
        ("liddell", {"alice"}),
        ("EXAMPLE.ORG", {"alice", "root"}),
        ("root admin", {"root"}),
        ("%", set()),
        ("_", set()),
        ("nobody", set()),
    ],
)
def test_search_by_username_email_or_name_in_any_case(app, browser, admin, q, found):
    r = browser.get("/admin/users", query_string={"q": q})
    assert r.status_code == 200
    shown = set(re.findall(r'<th scope="row" data-label="Username"><a [^>]*>([^<]+)</a>', text(r)))
    assert shown == found
    if not found:
        assert "No account matches" in text(r)


def test_pages_of_fifty(app, browser, admin):
    with app.app_context():
        for n in range(120):
            u = User(username=f"user{n:03d}", password_hash=None)
            u.set_email(f"user{n:03d}@example.net")
            db.session.add(u)
        db.session.commit()
    first = text(browser.get("/admin/users"))
    assert "122 accounts" in first and "page 1 of 3" in first
    assert first.count('<th scope="row"') == 50
    assert 'href="/admin/users?page=2"' in first and 'href="/admin/users?page=3"' in first
    last = text(browser.get("/admin/users?page=3"))
    assert last.count('<th scope="row"') == 22 and 'rel="prev"' in last
    assert 'rel="next"' not in last
    searched = text(browser.get("/admin/users?q=USER0&page=2"))
    assert "100 accounts" in searched and "page 2 of 2" in searched
    assert "q=USER0&amp;page=1" in searched
    r = browser.get("/admin/users?page=4")
    assert r.status_code == 404 and "There is no page 4: the last page is 3." in text(r)


@pytest.mark.parametrize(
    "query,message",
    [
        ({"page": "abc"}, "Page: use a whole number from 1."),
        ({"page": "0"}, "Page: use a whole number from 1."),
        ({"page": "9" * 30}, "Page: use a whole number from 1."),
        ({"page": "\u00b2"}, "Page: use a whole number from 1."),  # str.isdigit() says yes
        ({"q": "x" * 201}, "Search: use at most 200 characters."),
        ({"q": "a\x00b"}, "Search: contains characters that cannot be used."),
    ],
)
def test_list_bad_input(app, browser, admin, query, message):
    r = browser.get("/admin/users", query_string=query)
    assert r.status_code == 400
    assert message in text(r) and 'role="alert"' in text(r)


# -- creating -----------------------------------------------------------------------------


def create_form(**changes) -> dict:
    form = {
        "username": "Carol",
        "email": "carol@example.org",
        "name": "Carol Danvers",
        "setup": "password",
        "password": NEW,
        "confirm": NEW,
        "admin_password": PASSWORD,
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


def test_create_a_user_with_a_password(app, browser, admin):
    r = browser.post("/admin/users/new", create_form())
    assert r.status_code == 303
    carol = get_user(app, "carol")
    assert r.headers["Location"] == f"/admin/users/{carol.id}"
    assert carol.email == "carol@example.org" and carol.name == "Carol Danvers"
    assert not carol.is_admin and [link.connector for link in carol.links] == ["local"]
    page = text(browser.get(r.headers["Location"]))
    assert "carol is created with the password you set." in page
    assert "admin.user_created" in page  # the user page shows recent activity
    (event,) = events(app, "admin.user_created")
    assert event.user_id == carol.id
    assert event.data == {"admin": False, "setup": "password", "by": "root", "via": "console"}
    assert NEW not in all_event_text(app)
    assert signed_in_client(app, "carol", NEW)


def test_create_a_user_who_chooses_a_password_from_a_link(app, browser, admin, outbox):
    r = browser.post("/admin/users/new", create_form(setup="link", password="", confirm=""))
    assert r.status_code == 303
    carol = get_user(app, "carol")
    assert carol.password_hash is None and [link.connector for link in carol.links] == ["local"]
    (message,) = outbox
    assert message["to"] == "carol@example.org" and message["subject"] == "Your new account"
    assert "username carol" in message["body"]
    link = re.search(r"https://idp\.test(/reset/[\w-]+)", message["body"]).group(1)
    (event,) = events(app, "admin.user_created")
    assert event.data["setup"] == "reset_link" and link.split("/")[-1] not in all_event_text(app)
    person = Browser(https_client(app))
    r = person.post(link, {"password": NEW, "confirm": NEW})
    assert r.status_code == 302
    assert signed_in_client(app, "carol", NEW)


def test_creating_an_account_asks_for_the_admins_password(app, browser, admin):
    before = snapshot(app)
    r = browser.post("/admin/users/new", create_form(admin="y", admin_password=None))
    assert r.status_code == 400
    assert "Enter your password to confirm." in text(r)
    r = browser.post("/admin/users/new", create_form(admin_password=""))
    assert r.status_code == 400 and "Enter your password to confirm." in text(r)
    r = browser.post("/admin/users/new", create_form(admin="y", admin_password="wrong one"))
    assert r.status_code == 400 and WRONG_ADMIN in text(r)
    assert snapshot(app) == before
    r = browser.post("/admin/users/new", create_form(admin="y", admin_password=PASSWORD))
    assert r.status_code == 303 and get_user(app, "carol").is_admin
    assert events(app, "admin.user_created")[0].data["admin"] is True


@pytest.mark.parametrize(
    "changes,field,message",
    [
        ({"username": "ALICE"}, "username", "That username is taken. Choose another."),
        ({"email": "Alice@EXAMPLE.org"}, "email", "An account already uses this e-mail address."),
        ({"email": "not-an-address"}, "email", "Enter a valid e-mail address"),
        ({"email": ""}, "email", "Enter an e-mail address."),
        ({"username": "a b"}, "username", "Use letters, digits"),
        ({"username": "x" * 65}, "username", "Use 2 to 64 characters."),
        ({"name": "n" * 201}, "name", "Use at most 200 characters."),
        ({"email": "e" * 250 + "@example.org"}, "email", "Use at most 254 characters."),
        ({"name": "bad\x07name"}, "name", "Contains characters that cannot be used"),
        ({"password": "short", "confirm": "short"}, "password", "Use at least 12 characters."),
        ({"password": "x" * 1025, "confirm": "x" * 1025}, "password", "Use at most 1024"),
        (
            {"password": "carol@example.org", "confirm": "carol@example.org"},
            "password",
            "The password cannot be your e-mail address.",
        ),
        (
            {"password": "Password1234!", "confirm": "Password1234!"},
            "password",
            "among the most common ones",
        ),
        ({"confirm": NEW + " typo"}, "confirm", "The two passwords differ."),
        ({"password": "", "confirm": ""}, "password", "Enter a password, or choose to e-mail"),
        ({"setup": "telepathy"}, "setup", "Not a valid choice"),
        (
            {"admin": "y", "admin_password": "p" * 1025},
            "admin_password",
            "Field cannot be longer than 1024 characters.",
        ),
    ],
)
def test_create_bad_input_changes_nothing(app, browser, admin, outbox, changes, field, message):
    before = snapshot(app)
    r = browser.post("/admin/users/new", create_form(**changes))
    assert r.status_code == 400
    page = text(r)
    assert message in page
    assert f'href="#{field}"' in page  # the summary links to the field
    assert 'role="alert"' in page and "<title>Error: Create a user" in page
    assert snapshot(app) == before and outbox == []
    assert NEW not in page  # a refused form never sends the password back


def test_missing_csrf_token_changes_nothing(app, browser, admin):
    alice = admin.alice
    before = snapshot(app)
    for path in _paths(app, alice, POSTS):
        data = create_form() if path.endswith("/new") else {"admin_password": PASSWORD}
        r = browser.post(path, data, csrf=False)
        assert r.status_code == 400, path
        assert "This form has expired or was not sent from this site" in text(r)
    assert snapshot(app) == before


def test_unknown_user_or_method(app, browser, admin):
    before = snapshot(app)
    for path in ("/admin/users/987654", "/admin/users/987654/disable", "/admin/users/987654/admin"):
        r = browser.get(path)
        assert r.status_code == 404 and "There is no user with id 987654." in text(r)
    r = browser.post(
        "/admin/users/987654/disable", {"admin_password": PASSWORD}, token_from="/admin/users"
    )
    assert r.status_code == 404 and "There is no user with id 987654." in text(r)
    roots_link = link_id(app, "root", "local")
    r = browser.get(f"/admin/users/{admin.alice.id}/methods/{roots_link}/remove")
    assert r.status_code == 404 and "That sign-in method is not linked to alice." in text(r)
    assert browser.get("/admin/users/abc").status_code == 404
    # Beyond an INTEGER column (PostgreSQL would refuse the comparison): not found either.
    r = browser.get("/admin/users/99999999999999999999/sessions")
    assert r.status_code == 404 and "There is no user with id 99999999999999999999." in text(r)
    r = browser.get(f"/admin/users/{admin.alice.id}/methods/99999999999999999999/remove")
    assert r.status_code == 404
    assert snapshot(app) == before


# -- dangerous actions --------------------------------------------------------------------

DANGEROUS = [
    ("/admin/users/{id}/disable", {}),
    ("/admin/users/{id}/password", {"password": NEW, "confirm": NEW}),
    ("/admin/users/{id}/reset-link", {}),
    ("/admin/users/{id}/sessions", {}),
    ("/admin/users/{id}/admin", {"grant": "1"}),
    ("/admin/users/{id}/methods/{link}/remove", {}),
]


@pytest.mark.parametrize("path,data", DANGEROUS)
@pytest.mark.parametrize(
    "admin_password,message",
    [
        ("wrong password", WRONG_ADMIN),
        ("", "Enter your password to confirm."),
        (OTHER, WRONG_ADMIN),  # bob's password is not root's
        ("p" * 1025, "Field cannot be longer than 1024 characters."),
    ],
)
def test_dangerous_actions_ask_for_the_admins_password(
    app, browser, admin, outbox, path, data, admin_password, message
):
    with app.app_context():
        accounts.create_local("bob", "bob@example.org", OTHER)
    alice = admin.alice
    add_link(app, "alice", "google", "g-alice")  # so that one method may be removed
    token = add_token(app, alice.id)
    path = path.format(id=alice.id, link=link_id(app, "alice", "google"))
    before = snapshot(app)
    r = browser.post(path, {**data, "admin_password": admin_password})
    assert r.status_code == 400
    assert message in text(r) and 'role="alert"' in text(r)
    assert snapshot(app) == before and outbox == []
    assert not token_revoked(app, token)
    if admin_password != "" and len(admin_password) <= 1024:
        (failure,) = events(app, "admin.reauth_failure")
        assert failure.user_id == admin.id


def test_disable_ends_sessions_and_enable_lets_in_again(app, browser, admin):
    alice = admin.alice
    elsewhere = signed_in_client(app)
    token = add_token(app, alice.id)
    page = text(browser.get(f"/admin/users/{alice.id}/disable"))
    assert "Every session ends now" in page and "autofocus" in page
    r = browser.post(f"/admin/users/{alice.id}/disable", {"admin_password": PASSWORD})
    assert r.status_code == 303
    assert get_user(app, "alice").disabled
    assert elsewhere.get("/account").status_code == 302  # signed out
    assert token_revoked(app, token)
    assert Browser(https_client(app)).login().status_code == 403
    (event,) = events(app, "admin.user_disabled")
    assert event.user_id == alice.id and event.data == {"by": "root", "via": "console"}
    assert [e.data["reason"] for e in events(app, "session.ended")] == ["disabled"]

    # Disabling again is refused with a reason; enabling asks for the password too.
    r = browser.post(f"/admin/users/{alice.id}/disable", {"admin_password": PASSWORD})
    assert r.status_code == 409 and "alice is already disabled." in text(r)
    page = text(browser.get(f"/admin/users/{alice.id}"))
    assert "Enable the account" in page
    r = browser.post(f"/admin/users/{alice.id}/enable", {"admin_password": "wrong one"})
    assert r.status_code == 400 and get_user(app, "alice").disabled
    r = browser.post(f"/admin/users/{alice.id}/enable", {"admin_password": PASSWORD})
    assert r.status_code == 303 and not get_user(app, "alice").disabled
    r = browser.post(f"/admin/users/{alice.id}/enable", {"admin_password": PASSWORD})
    assert r.status_code == 409 and "alice is already active." in text(r)
    assert signed_in_client(app)
    (event,) = events(app, "admin.user_enabled")
    assert event.data == {"by": "root", "via": "console"}


def test_admin_cannot_disable_or_demote_themselves(app, browser, admin):
    me = f"/admin/users/{admin.id}"
    page = text(browser.get(me))
    assert "You cannot disable your own account." in page
    assert "You cannot remove your own administrator role." in page
    before = snapshot(app)
    r = browser.post(f"{me}/disable", {"admin_password": PASSWORD}, token_from=me)
    assert r.status_code == 409 and "You cannot disable your own account." in text(r)
    r = browser.post(f"{me}/admin", {"admin_password": PASSWORD, "grant": "0"}, token_from=me)
    assert r.status_code == 409 and "You cannot remove your own administrator role." in text(r)
    assert snapshot(app) == before


def test_set_a_new_password(app, browser, admin):
    alice = admin.alice
    elsewhere = signed_in_client(app)
    token = add_token(app, alice.id)
    with app.test_request_context():
        from identity.auth import reset

        reset.request_reset("alice@example.org")
    path = f"/admin/users/{alice.id}/password"
    before = snapshot(app)
    for data, message in [
        ({"password": "short", "confirm": "short"}, "Use at least 12 characters."),
        ({"password": "ALICE@example.org", "confirm": "ALICE@example.org"}, "e-mail address"),
        ({"password": "x" * 1025, "confirm": "x" * 1025}, "Use at most 1024 characters."),
        ({"password": "qwertyuiop123", "confirm": "qwertyuiop123"}, "most common ones"),
        ({"password": NEW, "confirm": NEW + "!"}, "The two passwords differ."),
        ({"password": "tab\there is bad", "confirm": "tab\there is bad"}, "cannot be used"),
    ]:
        r = browser.post(path, {**data, "admin_password": PASSWORD})
        assert r.status_code == 400 and message in text(r), message
        assert NEW not in text(r)
    assert snapshot(app) == before
    r = browser.post(path, {"password": NEW, "confirm": NEW, "admin_password": PASSWORD})
    assert r.status_code == 303
    assert elsewhere.get("/account").status_code == 302
    assert token_revoked(app, token)
    assert Browser(https_client(app)).login().status_code == 401
    assert signed_in_client(app, "alice", NEW)
    with app.app_context():
        assert all(r.used_at for r in db.session.scalars(select(PasswordReset)))
    (event,) = events(app, "admin.user_password_set")
    assert event.data == {"added_method": False, "by": "root", "via": "console"}
    assert NEW not in all_event_text(app) and PASSWORD not in all_event_text(app)


def test_setting_a_password_gives_a_passwordless_account_a_way_in(app, browser, admin):
    with app.app_context():
        dora = User(username="dora", password_hash=None)
        dora.set_email("dora@gmail.test")
        db.session.add(dora)
        db.session.flush()
        db.session.add(LinkedIdentity(user_id=dora.id, connector="google", subject="g-dora"))
        db.session.commit()
        dora_id = dora.id
    page = text(browser.get(f"/admin/users/{dora_id}/password"))
    assert "this adds <em>Password</em> as a way to sign in" in page
    r = browser.post(
        f"/admin/users/{dora_id}/password",
        {"password": NEW, "confirm": NEW, "admin_password": PASSWORD},
    )
    assert r.status_code == 303
    assert [link.connector for link in get_user(app, "dora").links] == ["google", "local"]
    assert signed_in_client(app, "dora", NEW)


def test_send_a_reset_link(app, browser, admin, outbox):
    alice = admin.alice
    path = f"/admin/users/{alice.id}/reset-link"
    assert "Alice@Example.org" in text(browser.get(path))
    r = browser.post(path, {"admin_password": PASSWORD})
    assert r.status_code == 303
    (message,) = outbox
    assert message["to"] == "Alice@Example.org" and message["subject"] == "Choose a new password"
    link = re.search(r"https://idp\.test(/reset/[\w-]+)", message["body"]).group(1)
    # The current password still works until the link is used.
    assert signed_in_client(app)
    assert Browser(https_client(app)).post(link, {"password": NEW, "confirm": NEW}).status_code
    assert signed_in_client(app, "alice", NEW)
    (event,) = events(app, "admin.user_reset_link_sent")
    assert event.data == {"by": "root", "via": "console"}
    assert link.split("/")[-1] not in all_event_text(app)


def test_no_reset_link_where_it_cannot_work(app, browser, admin, outbox):
    with app.app_context():
        nomail = User(username="nomail", password_hash=None)
        social = User(username="social", password_hash=None)
        social.set_email("social@gmail.test")
        db.session.add_all([nomail, social])
        db.session.flush()
        db.session.add(LinkedIdentity(user_id=nomail.id, connector="local", subject="x"))
        db.session.add(LinkedIdentity(user_id=social.id, connector="google", subject="g"))
        db.session.commit()
        ids = {"nomail": nomail.id, "social": social.id}
    browser.post(f"/admin/users/{admin.alice.id}/disable", {"admin_password": PASSWORD})
    before = snapshot(app)
    for user_id, message in [
        (ids["nomail"], "The account has no e-mail address to send a link to."),
        (ids["social"], "The account has no password here (it signs in with Google)"),
        (admin.alice.id, "The account is disabled: enable it first."),
    ]:
        path = f"/admin/users/{user_id}/reset-link"
        page = text(browser.get(path))
        assert message in page and "Send the link" not in page
        r = browser.post(path, {"admin_password": PASSWORD}, token_from=f"/admin/users/{user_id}")
        assert r.status_code == 409 and message in text(r)
    assert snapshot(app) == before and outbox == []


def test_remove_a_way_to_sign_in_but_never_the_last_of_an_active_account(app, browser, admin):
    alice = admin.alice
    google = add_link(app, "alice", "google", "g-alice")
    r = browser.post(
        f"/admin/users/{alice.id}/methods/{google}/remove", {"admin_password": PASSWORD}
    )
    assert r.status_code == 303
    assert [link.connector for link in get_user(app, "alice").links] == ["local"]
    (event,) = events(app, "admin.user_unlinked")
    assert event.data == {"method": "google", "by": "root", "via": "console"}

    # The last one, while the account is active: refused, and the page says why.
    local = link_id(app, "alice", "local")
    path = f"/admin/users/{alice.id}/methods/{local}/remove"
    page = text(browser.get(f"/admin/users/{alice.id}"))
    assert "the only way in: kept while the account is active" in page
    assert path not in page
    before = snapshot(app)
    r = browser.post(path, {"admin_password": PASSWORD}, token_from=f"/admin/users/{alice.id}")
    assert r.status_code == 409
    assert "Password is the only way to sign in to alice" in text(r)
    assert "Disable the account first" in text(r)
    assert snapshot(app) == before

    # Disabled, it may go: the password goes with it.
    browser.post(f"/admin/users/{alice.id}/disable", {"admin_password": PASSWORD})
    r = browser.post(path, {"admin_password": PASSWORD}, token_from=f"/admin/users/{alice.id}")
    assert r.status_code == 303
    gone = get_user(app, "alice")
    assert gone.links == [] and gone.password_hash is None
    assert "None: nobody can sign in to this account." in text(
        browser.get(f"/admin/users/{alice.id}")
    )


def test_end_sessions_and_revoke_tokens(app, browser, admin):
    alice = admin.alice
    elsewhere = signed_in_client(app)
    token = add_token(app, alice.id)
    r = browser.post(f"/admin/users/{alice.id}/sessions", {"admin_password": PASSWORD})
    assert r.status_code == 303
    assert elsewhere.get("/account").status_code == 302
    assert token_revoked(app, token)
    assert signed_in_client(app)  # may sign in again
    (event,) = events(app, "admin.user_sessions_ended")
    assert event.data == {"by": "root", "via": "console"}
    (ended,) = events(app, "session.ended")
    assert ended.data["reason"] == "admin" and ended.data["revoked_tokens"] == 1
    # The admin's own session is untouched.
    assert browser.get("/admin/users").status_code == 200


def test_ending_ones_own_sessions_signs_out(app, browser, admin):
    r = browser.post(f"/admin/users/{admin.id}/sessions", {"admin_password": PASSWORD})
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    assert browser.get("/admin/users").status_code == 302


def test_grant_and_remove_the_administrator_role(app, browser, admin):
    alice = admin.alice
    path = f"/admin/users/{alice.id}/admin"
    page = text(browser.get(path))
    assert "Make alice an administrator" in page and 'name="grant" type="hidden" value="1"' in page
    r = browser.post(path, {"admin_password": PASSWORD, "grant": "1"})
    assert r.status_code == 303 and get_user(app, "alice").is_admin
    assert signed_in_client(app).get("/admin/users").status_code == 200
    # A second grant (a stale page, a double click) is refused, not toggled back.
    r = browser.post(path, {"admin_password": PASSWORD, "grant": "1"}, token_from="/admin/users")
    assert r.status_code == 409 and "alice is already an administrator." in text(r)
    r = browser.post(path, {"admin_password": PASSWORD, "grant": "0"})
    assert r.status_code == 303 and not get_user(app, "alice").is_admin
    assert [e.data for e in events(app, "admin.user_admin_granted")] == [
        {"by": "root", "via": "console"}
    ]
    assert len(events(app, "admin.user_admin_revoked")) == 1
    before = snapshot(app)
    r = browser.post(path, {"admin_password": PASSWORD, "grant": "maybe"})
    assert r.status_code == 400 and "whether to grant or remove" in text(r)
    assert snapshot(app) == before


def test_an_oversized_body_is_refused(app, browser, admin):
    before = snapshot(app)
    r = browser.post("/admin/users/new", create_form(name="n" * 70_000))
    assert r.status_code == 413
    assert snapshot(app) == before


def test_user_page_shows_everything(app, browser, admin):
    page = text(browser.get(f"/admin/users/{admin.alice.id}"))
    for expected in (
        "<h1>alice</h1>",
        "Alice Liddell",
        "Alice@Example.org",
        "Active",
        "Password",
        "Disable the account…",
        "Set a new password…",
        "E-mail a reset link…",
        "End sessions and revoke tokens…",
        "Make an administrator…",
        "register",  # its first event
        "/admin/audit?user=alice",
    ):
        assert expected in page, expected


# -- the command line ---------------------------------------------------------------------


def run(app, *args, input: str | bytes = ""):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def test_cli_show(app, user):
    r = run(app, "user", "show", "ALICE")
    assert r.exit_code == 0
    assert "username:     alice" in r.output and "status:       active" in r.output
    assert "local" in r.output and "last sign-in: never" in r.output
    r = run(app, "user", "show", "alice", "--json")
    d = json.loads(r.output)
    assert d["username"] == "alice" and d["has_password"] is True
    assert d["links"][0]["connector"] == "local" and "password_hash" not in r.output
    r = run(app, "user", "show", "nobody")
    assert r.exit_code == 1 and "Error: no such user: nobody" in r.output
    r = run(app, "user", "show", "nul\x00here")
    assert r.exit_code == 1 and "Error: no such user: 'nul\\x00here'" in r.output


def test_cli_search_and_list_search(app, user):
    with app.app_context():
        accounts.create_local("bob", "bob@example.net", OTHER, name="Bob Builder")
    r = run(app, "user", "search", "BUILD")
    assert r.exit_code == 0 and "bob" in r.output and "alice" not in r.output
    r = run(app, "user", "list", "--search", "example.org", "--json")
    assert [json.loads(line)["username"] for line in r.output.splitlines()] == ["alice"]
    r = run(app, "user", "search", "  ")
    assert r.exit_code == 1 and "TEXT: give something to look for" in r.output
    r = run(app, "user", "list", "--search", "x" * 201)
    assert r.exit_code == 1 and "--search: at most 200 characters" in r.output


def test_cli_enable_and_disable(app, user):
    assert run(app, "user", "disable", "alice").exit_code == 0
    r = run(app, "user", "enable", "alice")
    assert r.exit_code == 0 and "alice is enabled" in r.output
    assert not get_user(app, "alice").disabled
    r = run(app, "user", "enable", "alice")
    assert r.exit_code == 0 and "already active" in r.output
    r = run(app, "user", "enable", "nobody")
    assert r.exit_code == 1 and "no such user: nobody" in r.output
    assert [e.data for e in events(app, "admin.user_enabled")] == [{"via": "cli"}]


def test_cli_set_password(app, user):
    elsewhere = signed_in_client(app)
    token = add_token(app, user.id)
    before = snapshot(app)
    for stdin, message in [
        ("short\n", "password: Use at least 12 characters."),
        ("alice\n", "password: Use at least 12 characters."),
        ("alice\n", "The password cannot be your username."),
        ("Password1234!\n", "password: This password is among the most common ones"),
        ("pass\x07word long enough\n", "control characters"),
        (b"\xff\xfe long password here\n", "not UTF-8"),
    ]:
        r = run(app, "user", "set-password", "alice", "--password-stdin", input=stdin)
        assert r.exit_code == 1 and message in r.output, r.output
    r = run(app, "user", "set-password", "nobody", "--password-stdin", input=NEW + "\n")
    assert r.exit_code == 1 and "no such user: nobody" in r.output
    r = run(app, "user", "set-password", "alice", input=NEW + "\n")
    assert r.exit_code == 2 and "--password-stdin" in r.output
    assert snapshot(app) == before
    r = run(app, "user", "set-password", "alice", "--password-stdin", input=NEW + "\n")
    assert r.exit_code == 0 and "alice's password is set" in r.output
    assert elsewhere.get("/account").status_code == 302 and token_revoked(app, token)
    assert signed_in_client(app, "alice", NEW)
    assert NEW not in r.output and NEW not in all_event_text(app)


def test_cli_send_reset_link(app, user, outbox):
    r = run(app, "user", "send-reset-link", "alice")
    assert r.exit_code == 0 and "sent to Alice@Example.org" in r.output
    assert outbox[0]["to"] == "Alice@Example.org"
    run(app, "user", "disable", "alice")
    r = run(app, "user", "send-reset-link", "alice")
    assert r.exit_code == 1 and "Error: The account is disabled: enable it first." in r.output
    assert len(outbox) == 1


def test_cli_create_with_a_reset_link(app, outbox):
    r = run(
        app,
        "user",
        "create",
        "--username",
        "erin",
        "--email",
        "erin@example.org",
        "--send-reset-link",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["sign_in_methods"] == ["local"]
    assert outbox[0]["subject"] == "Your new account"
    assert events(app, "admin.user_created")[0].data == {
        "admin": False,
        "setup": "reset_link",
        "via": "cli",
    }
    r = run(
        app,
        "user",
        "create",
        "--username",
        "fred",
        "--email",
        "fred@example.org",
        "--send-reset-link",
        "--password-stdin",
        input=NEW + "\n",
    )
    assert r.exit_code == 2 and "either --password-stdin or --send-reset-link" in r.output
    assert get_user(app, "fred") is None


def test_cli_unlink(app, user):
    add_link(app, "alice", "google", "g-alice")
    r = run(app, "user", "unlink", "alice", "facebook")
    assert r.exit_code == 1
    assert "alice has no 'facebook' sign-in method (it has: local, google)" in r.output
    r = run(app, "user", "unlink", "alice", "google")
    assert r.exit_code == 0 and "alice no longer signs in with google" in r.output
    before = snapshot(app)
    r = run(app, "user", "unlink", "alice", "local")
    assert r.exit_code == 1 and "the only way to sign in to alice" in r.output
    assert snapshot(app) == before
    r = run(app, "user", "unlink", "nobody", "local")
    assert r.exit_code == 1 and "no such user: nobody" in r.output
    assert [e.data for e in events(app, "admin.user_unlinked")] == [
        {"method": "google", "via": "cli"}
    ]


ADMIN_GROUP = "cn=admins,ou=groups,dc=example,dc=org"


def make_user(app, username: str, *, admin=False, disabled=False, group_dns=()) -> None:
    with app.app_context():
        u = accounts.create_local(username, f"{username}@example.org", PASSWORD)
        u.is_admin, u.disabled, u.group_dns = admin, disabled, list(group_dns)
        db.session.commit()


def test_cli_refuses_to_disable_or_demote_the_last_active_administrator(app, user):
    make_user(app, "root", admin=True)
    make_user(app, "gone", admin=True, disabled=True)  # a disabled administrator is no help
    before = snapshot(app)
    r = run(app, "user", "disable", "root")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "root is the last active administrator and cannot be disabled" in r.output
    r = run(app, "user", "set-admin", "root", "--no-admin")
    assert r.exit_code == 1
    assert "root is the last active administrator and cannot be demoted" in r.output
    assert "make another account an administrator first" in r.output
    assert snapshot(app) == before
    # Others are not administrators: they come and go freely.
    assert run(app, "user", "disable", "alice").exit_code == 0
    # A member of the directory's admin group is an administrator too: root may now go.
    app.config["LDAP_ADMIN_GROUP"] = ADMIN_GROUP
    make_user(app, "dirk", group_dns=[ADMIN_GROUP])
    assert run(app, "user", "set-admin", "root", "--no-admin").exit_code == 0
    assert run(app, "user", "disable", "root").exit_code == 0
    assert not get_user(app, "root").is_admin and get_user(app, "root").disabled


def test_the_last_administrator_may_drop_the_flag_when_the_directory_group_keeps_them(app):
    app.config["LDAP_ADMIN_GROUP"] = ADMIN_GROUP
    make_user(app, "root", admin=True, group_dns=[ADMIN_GROUP])
    r = run(app, "user", "set-admin", "root", "--no-admin")
    assert r.exit_code == 0, r.output
    r = run(app, "user", "disable", "root")
    assert r.exit_code == 1 and "last active administrator" in r.output


def test_cli_end_sessions(app, user):
    elsewhere = signed_in_client(app)
    token = add_token(app, user.id)
    r = run(app, "user", "end-sessions", "alice")
    assert r.exit_code == 0 and "alice's sessions are ended" in r.output
    assert elsewhere.get("/account").status_code == 302 and token_revoked(app, token)
    r = run(app, "user", "end-sessions", "nobody")
    assert r.exit_code == 1 and "no such user: nobody" in r.output


def test_cli_set_admin(app, user):
    r = run(app, "user", "set-admin", "alice")
    assert r.exit_code == 0 and "alice is now an administrator" in r.output
    assert get_user(app, "alice").is_admin
    r = run(app, "user", "set-admin", "alice")
    assert "was already an administrator" in r.output
    make_user(app, "root", admin=True)  # alice is not the last one
    r = run(app, "user", "set-admin", "alice", "--no-admin")
    assert r.exit_code == 0 and "no longer an administrator" in r.output
    assert not get_user(app, "alice").is_admin
    r = run(app, "user", "set-admin", "nobody")
    assert r.exit_code == 1 and "no such user: nobody" in r.output
    assert len(events(app, "admin.user_admin_granted")) == 1
    assert len(events(app, "admin.user_admin_revoked")) == 1
