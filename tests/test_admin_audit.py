"""The audit log (/admin/audit and `flask --app idp audit list`): newest first, filtered by
account, app, type and time, a specific 400 for every bad filter; and the events a whole
sign-in/consent/token/refresh/revoke/password-change flow leaves, none holding a secret."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from oidc_rp import App, Person, register, sign_in_and_allow
from sqlalchemy import select

from conftest import PASSWORD
from identity.auth import accounts
from identity.extensions import db
from identity.models import Event, User

T0 = datetime(2024, 5, 31, 12, 0, 0)


@pytest.fixture
def admin(app, browser, user):
    with app.app_context():
        root = accounts.create_local("root", "root@example.org", PASSWORD)
        root.is_admin = True
        db.session.commit()
    assert browser.login("root").status_code == 302


def add_events(app, rows: list[tuple]) -> None:
    """(minutes after T0, type, username or None, data) each."""
    with app.app_context():
        for minutes, type_, username, data in rows:
            user = User.find(username) if username else None
            db.session.add(
                Event(
                    created_at=T0 + timedelta(minutes=minutes),
                    type=type_,
                    user_id=user.id if user else None,
                    ip="192.0.2.7",
                    data=data,
                )
            )
        db.session.commit()


def text(response) -> str:
    return response.get_data(as_text=True)


def shown_types(page: str) -> list[str]:
    return re.findall(r'<td data-label="Type"[^>]*><div><code>([^<]+)</code>', page)


SAMPLE = [
    (0, "signin.success", "alice", {"method": "local"}),
    (1, "signin.failure", "alice", {"method": "password", "reason": "bad_credentials"}),
    (60 * 24, "consent.given", "alice", {"client_id": "app-one", "scope": "openid profile"}),
    (60 * 24 + 1, "token.issued", "alice", {"client_id": "app-one", "refresh": True}),
    (60 * 48, "token.issued", None, {"client_id": "app-two", "grant_type": "client_credentials"}),
    (60 * 48 + 5, "admin.user_disabled", "root", {"by": "root", "via": "console"}),
]


def test_signed_out_and_non_admins_are_kept_out(app, browser, user):
    r = browser.get("/admin/audit?type=signin.")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=/admin/audit")
    browser.login()
    assert browser.get("/admin/audit").status_code == 403


def test_newest_first_with_time_type_user_ip_and_data(app, browser, admin):
    add_events(
        app,
        [
            *SAMPLE,
            (60 * 72, "test.escaping", "alice", {"note": "<script>x</script> two words", "n": 3}),
        ],
    )
    page = text(browser.get("/admin/audit?type=test.&type=ignored"))
    assert shown_types(page) == ["test.escaping"]
    assert "2024-06-03 12:00:00" in page and 'datetime="2024-06-03T12:00:00Z"' in page
    assert "192.0.2.7" in page and ">alice</a>" in page
    assert "&lt;script&gt;" in page and "<script>x" not in page
    assert "note=&#34;&lt;script&gt;x&lt;/script&gt; two words&#34; n=3" in page
    everything = text(browser.get("/admin/audit"))
    types = shown_types(everything)
    assert types[:3] == ["test.escaping", "admin.user_disabled", "token.issued"]
    assert "client_id=app-one refresh=true" in everything


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"user": "ALICE"}, ["token.issued", "consent.given", "signin.failure", "signin.success"]),
        ({"user": "root@example.org"}, ["admin.user_disabled"]),
        ({"app": "app-one"}, ["token.issued", "consent.given"]),
        ({"app": "app-two"}, ["token.issued"]),
        ({"type": "signin."}, ["signin.failure", "signin.success"]),
        ({"type": "TOKEN"}, ["token.issued", "token.issued"]),
        ({"from": "2024-06-01", "to": "2024-06-01"}, ["token.issued", "consent.given"]),
        ({"from": "2024-06-02"}, ["admin.user_disabled", "token.issued"]),
        ({"to": "2024-05-31T12:00"}, ["signin.success"]),
        ({"to": "2024-05-31T14:00:30+02:00"}, ["signin.success"]),
        ({"from": "2024-05-31T12:01:00Z", "to": "2024-05-31T12:01:00Z"}, ["signin.failure"]),
        ({"user": "alice", "app": "app-one", "type": "token."}, ["token.issued"]),
        ({"from": "0001-01-01"}, [t for _, t, _, _ in reversed(SAMPLE)]),
        ({"app": "deleted-app"}, []),
    ],
)
def test_filters(app, browser, admin, query, expected):
    # Events made by the fixtures (root's registration and sign-in) fall outside 2024.
    add_events(app, SAMPLE)
    if "to" not in query:
        query = {**query, "to": "2024-12-31"}
    r = browser.get("/admin/audit", query_string=query)
    assert r.status_code == 200, text(r)
    assert shown_types(text(r)) == expected
    if query.get("app") == "deleted-app":
        assert "No app is registered with this client_id now" in text(r)
        assert "No event matches the filters." in text(r)


@pytest.mark.parametrize(
    "query,message",
    [
        ({"user": "nobody"}, "No account is named &#39;nobody&#39;."),
        ({"user": "x" * 255}, "Use at most 254 characters."),
        ({"app": "a" * 49}, "Use at most 48 characters."),
        ({"app": "bad\x01app"}, "Contains characters that cannot be used."),
        ({"type": "t" * 65}, "Use at most 64 characters."),
        ({"type": "signin.*"}, "Event types use letters, digits"),
        ({"type": "sign%"}, "Event types use letters, digits"),
        ({"from": "yesterday"}, "&#39;yesterday&#39; is not a date or time."),
        ({"from": "2024-13-01"}, "is not a date or time"),
        ({"to": "2024-02-30"}, "is not a date or time"),
        ({"to": "1" * 41}, "Use at most 40 characters."),
        ({"from": "2024-06-02", "to": "2024-06-01"}, "The end of the range is before its start."),
        ({"from": "2024-06-01T10:00", "to": "2024-06-01T09:59"}, "before its start"),
        ({"before": "abc"}, "That page link is not valid"),
        ({"after": "-1"}, "That page link is not valid"),
        ({"before": "9" * 40}, "That page link is not valid"),
        ({"before": "2147483648"}, "That page link is not valid"),
        ({"after": "\u00b2"}, "That page link is not valid"),
        ({"before": "5", "after": "3"}, "That page link is not valid"),
    ],
)
def test_bad_filters_answer_400_with_a_specific_message(app, browser, admin, query, message):
    add_events(app, SAMPLE)
    r = browser.get("/admin/audit", query_string=query)
    assert r.status_code == 400
    page = text(r)
    assert message in page
    assert 'role="alert"' in page and "<title>Error: Audit log" in page
    assert "<table" not in page  # no events under a filter that could not be applied


def test_pages_of_fifty_by_keyset(app, browser, admin):
    add_events(app, [(n, f"test.n{n:03d}", "alice", {"n": n}) for n in range(120)])
    first = text(browser.get("/admin/audit?type=test.&user=alice"))
    types = shown_types(first)
    assert len(types) == 50 and types[0] == "test.n119" and types[-1] == "test.n070"
    older = re.search(r'href="(/admin/audit\?before=\d+[^"]*)" rel="next"', first).group(1)
    older = older.replace("&amp;", "&")
    assert "type=test." in older and "user=alice" in older  # the filters stay
    second = text(browser.get(older))
    assert shown_types(second)[0] == "test.n069" and shown_types(second)[-1] == "test.n020"
    third_url = re.search(r'href="([^"]+)" rel="next"', second).group(1).replace("&amp;", "&")
    third = text(browser.get(third_url))
    assert shown_types(third) == [f"test.n{n:03d}" for n in range(19, -1, -1)]
    assert 'rel="next"' not in third
    newer = re.search(r'href="([^"]+)" rel="prev"', third).group(1).replace("&amp;", "&")
    assert shown_types(text(browser.get(newer))) == shown_types(second)
    back = re.search(r'href="([^"]+)" rel="prev"', second).group(1).replace("&amp;", "&")
    assert shown_types(text(browser.get(back))) == types
    assert 'rel="prev"' not in text(browser.get(back))


def test_filters_are_a_get_form_without_csrf(app, browser, admin):
    page = text(browser.get("/admin/audit"))
    form = re.search(r'<form method="get" action="/admin/audit"[^>]*>(.*?)</form>', page, re.S)
    assert form and "csrf_token" not in form.group(1)
    for name, label in [("user", "User"), ("app", "App"), ("type", "Type"), ("from", "From")]:
        assert f'<label for="{name}">{label}' in form.group(1)


# -- the command line ---------------------------------------------------------------------


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def test_cli_audit_list(app, user):
    with app.app_context():
        accounts.create_local("root", "root@example.org", PASSWORD)
    add_events(app, SAMPLE)
    r = run(app, "audit", "list", "--until", "2024-12-31")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) == 6 and lines[0].startswith("2024-06-02T12:05:00Z  admin.user_disabled")
    assert "root" in lines[0] and "192.0.2.7" in lines[0] and "by=root via=console" in lines[0]
    r = run(app, "audit", "list", "--user", "alice", "--type", "signin.", "--json")
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [d["type"] for d in rows] == ["signin.failure", "signin.success"]
    assert rows[0]["user"] == "alice" and rows[0]["data"]["reason"] == "bad_credentials"
    assert rows[0]["time"] == "2024-05-31T12:01:00Z"
    r = run(app, "audit", "list", "--app", "app-one", "--since", "2024-06-01", "--limit", "1")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 1 and "token.issued" in r.output
    # The last recorded first (the sample was recorded after the fixtures' events).
    r = run(app, "audit", "list", "--limit", "1", "--json")
    assert json.loads(r.output)["type"] == "admin.user_disabled"
    # Up to the last day there is: no overflow past 9999-12-31.
    r = run(app, "audit", "list", "--since", "0001-01-01", "--until", "9999-12-31")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 6 + 2  # and two registrations


@pytest.mark.parametrize(
    "args,message",
    [
        (["--user", "nobody"], "--user: no account is named 'nobody'."),
        (["--since", "soon"], "--since: 'soon' is not a date or time."),
        (["--since", "2024-06-02", "--until", "2024-06-01"], "--until: the end of the range"),
        (["--type", "a b"], "--type: event types use letters"),
        (["--app", "x" * 60], "--app: a client_id has at most 48"),
        (["--limit", "0"], "--limit: a whole number from 1 to 10000"),
        (["--limit", "many"], "--limit: a whole number from 1 to 10000"),
        (["--limit", "10001"], "--limit: a whole number from 1 to 10000"),
        (["--limit", "\u00b2"], "--limit: a whole number from 1 to 10000"),
        (["--user", "a\x00b"], "--user: contains characters that cannot be used."),
    ],
)
def test_cli_audit_list_bad_input(app, user, args, message):
    r = run(app, "audit", "list", *args)
    assert r.exit_code == 1
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


# -- what the log holds -------------------------------------------------------------------


def test_a_whole_flow_is_audited_and_no_secret_is_stored(idp, caplog):
    """Sign in, consent, code, tokens, refresh, revoke, password change, sign out, an admin
    reset: the events are there, and no password, token, code or secret is in any of them
    (nor in the log lines)."""
    caplog.set_level("INFO", logger="identity.audit")
    app = App(idp, register(idp))
    person = Person(idp)
    callback = sign_in_and_allow(person, app)
    code = app.callback_params(callback)["code"]
    first = app.redeem(callback)
    second = app.post(
        "/token", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    ).json()
    assert app.post("/revoke", {"token": second["refresh_token"]}).status_code == 200
    new_password = "a completely new passphrase"
    account = person.open(f"{idp.url}/account")
    changed = person.submit(
        account,
        {"current_password": PASSWORD, "password": new_password, "confirm": new_password},
        action="/account/password",
    )
    assert changed.status_code == 200 and "Your password is changed" in changed.text
    admin_set = "the admin set this one"
    cli = idp.app.test_cli_runner().invoke(
        args=["user", "set-password", "alice", "--password-stdin"], input=admin_set + "\n"
    )
    assert cli.exit_code == 0, cli.output

    with idp.app.app_context():
        stored = db.session.scalars(select(Event).order_by(Event.id)).all()
        types = [e.type for e in stored]
        dumped = json.dumps(
            [{"type": e.type, "ip": e.ip, "data": e.data} for e in stored], default=str
        )
    for expected in (
        "signin.success",
        "consent.given",
        "token.issued",
        "token.refreshed",
        "token.revoked",
        "password.change",
        "session.ended",
        "admin.user_password_set",
    ):
        assert expected in types, (expected, types)
    assert types.count("token.issued") == 1 and types.count("token.refreshed") == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "identity.audit")
    secrets = {
        "password": PASSWORD,
        "new password": new_password,
        "admin-set password": admin_set,
        "code": code,
        "code verifier": app.verifier,
        "client secret": app.registered.secret,
        **{f"first {k}": first[k] for k in ("access_token", "refresh_token", "id_token")},
        **{f"second {k}": second[k] for k in ("access_token", "refresh_token")},
    }
    for what, value in secrets.items():
        assert value and value not in dumped, f"the {what} is in an audit event"
        assert value not in logged, f"the {what} is in an audit log line"
        # Nor a recognisable piece of a token (a JWT's signature part).
        tail = value.rsplit(".", 1)[-1]
        assert len(tail) < 16 or tail not in dumped, f"part of the {what} is in an event"


def test_sign_in_methods_are_named_as_the_account_page_names_them(app, browser, admin):
    add_events(
        app,
        [
            (0, "signin.success", "alice", {"method": "ldap"}),
            (1, "signin.failure", "alice", {"method": "password", "reason": "bad_credentials"}),
            (2, "link", "alice", {"method": "google", "auto": False}),
        ],
    )
    page = text(browser.get("/admin/audit?user=alice"))
    methods = re.findall(r'<span class="event-method">([^<]+)</span>', page)
    # Newest first; last, alice's registration (a password of her own: "local").
    assert methods == ["Google", "Password (any)", "Company directory", "Password"]
    assert "<code>method=" not in page and " method=" not in page.split("<tbody>")[1]
    assert "reason=bad_credentials" in page and "auto=false" in page


def test_usernames_are_never_broken_to_narrow_their_column(app, browser, admin):
    add_events(app, [(0, "signin.success", "alice", {"method": "local"})])
    page = text(browser.get("/admin/audit"))
    assert '<td data-label="User" class="event-user">' in page
    css = (Path(app.static_folder) / "idp.css").read_text()
    assert ".datatable .event-user { overflow-wrap: break-word; }" in css


@pytest.mark.parametrize(
    "since,until,types",
    [
        ("", "", ("date", "date")),
        ("2024-05-31", "2024-06-01", ("date", "date")),
        ("2024-05-31T12:30", "2024-06-01", ("datetime-local", "date")),
        ("soon", "", ("text", "date")),
    ],
)
def test_time_filters_use_date_pickers(app, browser, admin, since, until, types):
    page = text(browser.get(f"/admin/audit?from={since}&to={until}"))
    found = (
        re.search(r'<input[^>]*name="from"[^>]*>', page).group(0),
        re.search(r'<input[^>]*name="to"[^>]*>', page).group(0),
    )
    for tag, kind in zip(found, types, strict=True):
        assert f'type="{kind}"' in tag, tag
