"""Limits on what a correct request can still cost: password checks per client address
(right or wrong), registrations per address, reset e-mails per target address, reset
requests per address, and the token endpoint's requests per app and failed client
authentications per address. Counted in real Redis, shared by two app instances (nodes)."""

from __future__ import annotations

import base64
import time

import pytest
import redis
from audit_events import events
from redis_server import REDIS_URL, count_checkouts
from test_bruteforce import OwnRedis

from config import ConfigError
from conftest import PASSWORD, Browser, https_client, make_app
from identity.extensions import db as _db
from identity.models import User
from identity.oidc import clients

WRONG = "not the password at all"
ELSEWHERE = {"REMOTE_ADDR": "192.0.2.7"}
JSON = {"Accept": "application/json"}


@pytest.fixture
def limits() -> dict:
    """Override per test (parametrize) with the limits under test."""
    return {}


@pytest.fixture
def shared(redis_prefix, smtp, limits) -> dict:
    controller, _ = smtp
    return {
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": redis_prefix,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": controller.port,
        "MAIL_USE_STARTTLS": False,
        **limits,
    }


@pytest.fixture
def app_overrides(shared) -> dict:
    return shared


@pytest.fixture
def other(app, shared, database_url, tmp_path):
    """A second node: the same database, Redis and secret key."""
    node = make_app(database_url, tmp_path, SECRET_KEY=app.config["SECRET_KEY"], **shared)
    yield Browser(https_client(node))
    with node.app_context():
        _db.session.remove()
        _db.engine.dispose()


def with_limits(**values):
    return pytest.mark.parametrize("limits", [values], ids=[""])


def login(browser: Browser, password: str = PASSWORD, **kw):
    """A sign-in in a browser of its own, at the node of `browser`."""
    fresh = Browser(https_client(browser.client.application))
    return fresh.post("/login", {"username": "alice", "password": password}, **kw)


def retry_after(response) -> int:
    value = int(response.headers["Retry-After"])
    assert value >= 1
    return value


@with_limits(PASSWORD_CHECK_RATE_LIMIT="3/minute")
def test_password_checks_are_limited_per_address_right_or_wrong(app, browser, other, user):
    assert login(browser).status_code == 302
    assert login(other).status_code == 302
    assert login(browser, WRONG).status_code == 401
    refused = login(other)
    assert refused.status_code == 429 and retry_after(refused) <= 60
    assert "Too many password checks from this address" in refused.get_data(as_text=True)
    as_json = login(browser, headers=JSON)
    assert as_json.status_code == 429 and as_json.json["error"] == "too_many_requests"
    # Not a lockout of alice: from another address, her password works.
    assert login(other, environ_base=ELSEWHERE).status_code == 302


@with_limits(PASSWORD_CHECK_RATE_LIMIT="2/hour;3/minute")
def test_a_refused_password_check_counts_toward_no_later_limit(app, browser, user):
    """Counted as each limit is used elsewhere: the uses before the full one stay counted,
    the refused one and those after it do not (they were sent in the same round trip)."""
    assert login(browser).status_code == 302
    assert login(browser, WRONG).status_code == 401
    refused = login(browser)
    assert refused.status_code == 429 and 3000 < retry_after(refused) <= 3600
    throttle = app.extensions["idp.throttle"]
    per_hour, per_minute = throttle.limits["password-checks"]
    stats = throttle.primary.get_window_stats
    assert stats(per_hour, "password-checks", "127.0.0.1").remaining == 0
    assert stats(per_minute, "password-checks", "127.0.0.1").remaining == 1
    # Nor a place in the lockout's count: the wrong password alone is there.
    with app.test_request_context():
        account = throttle._signin_keys("alice")[0][1]
    failures = stats(throttle.failures["account"], "signin", "account", account)
    assert failures.remaining == app.config["LOCKOUT_ACCOUNT_FAILURES"] - 1


def register(browser: Browser, username: str, email: str, **kw):
    data = {"username": username, "email": email, "password": PASSWORD, "confirm": PASSWORD}
    return browser.post("/register", data, **kw)


@with_limits(REGISTRATION_RATE_LIMIT="2/hour")
def test_registrations_are_limited_per_address(app, browser, other):
    assert register(browser, username="bob", email="bob@example.org").status_code == 302
    assert register(other, username="carol", email="carol@example.org").status_code == 302
    refused = register(other, username="dave", email="dave@example.org")
    assert refused.status_code == 429 and 3000 < retry_after(refused) <= 3600
    assert "Too many accounts were created from this address" in refused.get_data(as_text=True)
    with app.app_context():
        assert User.find("dave") is None
    elsewhere = register(other, username="dave", email="dave@example.org", environ_base=ELSEWHERE)
    assert elsewhere.status_code == 302
    # Within the limit, a taken name is answered (and counted: see below).
    taken = register(browser, username="bob", email="bob2@example.org", environ_base=ELSEWHERE)
    assert taken.status_code == 400 and "That username is taken" in taken.get_data(as_text=True)


@with_limits(REGISTRATION_RATE_LIMIT="3/hour")
def test_answers_that_a_name_is_taken_count_so_that_accounts_cannot_be_listed(app, browser, user):
    """Each "taken" says who has an account (or a place in the company directory): counted
    like a registration, so one address learns a few names an hour, not every name."""
    assert register(browser, "alice", "someone@example.org").status_code == 400
    assert register(browser, "newcomer", "alice@example.org").status_code == 400
    # Refused for its password alone: not counted, the person tries again.
    weak = browser.post(
        "/register",
        {"username": "newcomer", "email": "n@example.org", "password": "x", "confirm": "x"},
    )
    assert weak.status_code == 400 and "taken" not in weak.get_data(as_text=True)
    assert register(browser, "alice", "someone@example.org").status_code == 400  # the third
    for username, email in (("alice", "someone@example.org"), ("zed", "zed@example.org")):
        refused = register(browser, username, email)
        page = refused.get_data(as_text=True)
        assert refused.status_code == 429 and "taken" not in page, page
    with app.app_context():
        assert User.find("zed") is None and User.find("newcomer") is None


def ask_reset(browser: Browser, email: str, ip: str):
    return browser.post("/reset", {"email": email}, environ_base={"REMOTE_ADDR": ip})


@with_limits(RESET_EMAIL_RATE_LIMIT="2/hour")
def test_reset_emails_per_address_are_limited_without_saying_whether_it_has_an_account(
    app, browser, other, user, smtp
):
    _, inbox = smtp
    pages = []
    # From different client addresses and nodes: the per-target limit is shared.
    for n, (node, email) in enumerate(
        [
            (browser, "alice@example.org"),
            (other, "ALICE@example.org"),
            (browser, "alice@example.org"),
        ]
        + [(other, "nobody@example.org")] * 3
    ):
        response = ask_reset(node, email, f"198.51.100.{n}")
        assert response.status_code == 200
        pages.append(response.get_data(as_text=True).replace(email, "").split("csrf")[0])
    # Over the limit, the page is the same as for a mail sent and as for an unknown address.
    assert len(set(pages)) == 1
    time.sleep(0.5)
    assert len(inbox.wait(3, timeout=1)) == 2
    limited = events(app, "password.reset_limited")
    assert [(e.user_id, e.data["known"]) for e in limited] == [(user.id, True), (None, False)]


@with_limits(RESET_REQUEST_RATE_LIMIT="2/hour")
def test_reset_requests_are_limited_per_client_address(app, browser, other, user, smtp):
    _, inbox = smtp
    assert ask_reset(browser, "alice@example.org", "203.0.113.5").status_code == 200
    assert ask_reset(other, "someone@example.org", "203.0.113.5").status_code == 200
    refused = ask_reset(browser, "alice@example.org", "203.0.113.5")
    assert refused.status_code == 429 and retry_after(refused) <= 3600
    assert "Too many password resets were asked" in refused.get_data(as_text=True)
    as_json = other.post(
        "/reset",
        {"email": "alice@example.org"},
        environ_base={"REMOTE_ADDR": "203.0.113.5"},
        headers=JSON,
    )
    assert as_json.status_code == 429 and as_json.json["error"] == "too_many_requests"
    assert ask_reset(browser, "alice@example.org", "203.0.113.6").status_code == 200
    assert len(inbox.wait(2)) == 2


# -- the token endpoint ------------------------------------------------------------------------

CC = {"grant_type": "client_credentials"}


@pytest.fixture
def machine_apps(app, db) -> dict:
    """Two apps with the client credentials grant: name -> (client_id, secret)."""
    with app.app_context():
        made = {}
        for name in ("one", "two"):
            row, secret = clients.create(name, [], grant_types=["client_credentials"])
            made[name] = (row.client_id, secret)
        return made


def token(browser: Browser, client_id: str, secret: str, **kw):
    auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return browser.client.post("/token", data=CC, headers={"Authorization": f"Basic {auth}"}, **kw)


@with_limits(TOKEN_RATE_LIMIT="3/minute")
def test_token_requests_are_limited_per_app_across_nodes(browser, other, machine_apps):
    one = machine_apps["one"]
    assert token(browser, *one).status_code == 200
    assert token(other, *one).status_code == 200
    assert token(browser, *one).status_code == 200
    refused = token(other, *one)
    assert refused.status_code == 429 and refused.json["error"] == "slow_down"
    assert retry_after(refused) <= 60
    assert token(browser, *one).status_code == 429
    assert token(browser, *machine_apps["two"]).status_code == 200


@with_limits(TOKEN_FAILURE_RATE_LIMIT="2/minute")
def test_failed_client_authentications_are_limited_per_address_across_nodes(
    browser, other, machine_apps
):
    client_id, secret = machine_apps["one"]
    wrong = token(browser, client_id, "guess")
    assert wrong.status_code == 401 and wrong.json["error"] == "invalid_client"
    assert token(other, client_id, "guess").status_code == 401
    # The right secret too, from that address, on either node: a guess that is right is
    # refused as well.
    refused = token(other, client_id, secret)
    assert refused.status_code == 429 and refused.json["error"] == "slow_down"
    assert retry_after(refused) <= 60
    assert token(browser, client_id, secret).status_code == 429
    assert token(browser, client_id, secret, environ_base=ELSEWHERE).status_code == 200


def test_a_token_request_asks_redis_once(app, browser, machine_apps, monkeypatch):
    """The address's failures and the app's requests are read and counted in one round trip
    (a pipeline), not one per limit: each is a wait on Redis in every token request."""
    checkouts = count_checkouts(app, monkeypatch)
    assert token(browser, *machine_apps["one"]).status_code == 200
    assert len(checkouts) == 1


@with_limits(TOKEN_RATE_LIMIT="2/minute", TOKEN_FAILURE_RATE_LIMIT="2/minute")
def test_token_limits_count_alike_in_one_round_trip_or_one_call_each(app, machine_apps):
    """What the pipeline reads and counts is what `limits`' own calls read and count (its
    Lua scripts run by their SHA, their answers read as the library reads them): held to
    the pinned version."""
    throttle = app.extensions["idp.throttle"]
    failures = throttle.token_failures[0]
    per_app = throttle.token_limits[0]
    calls = [
        ("get_window_stats", failures, ("token-failures", "192.0.2.9")),
        ("hit", per_app, ("token", "an-app")),
    ]
    first = throttle._run_all(calls)
    assert first[0].remaining == 2 and first[1] is True
    library = throttle.primary
    assert library.get_window_stats(per_app, "token", "an-app").remaining == 1
    library.hit(failures, "token-failures", "192.0.2.9")
    second = throttle._run_all(calls)
    assert second[0].remaining == 1 and second[1] is True
    assert second[0].reset_time == pytest.approx(
        library.get_window_stats(failures, "token-failures", "192.0.2.9").reset_time
    )
    third = throttle._run_all(calls)
    assert third[1] is False  # the app's third request in the window
    assert library.get_window_stats(per_app, "token", "an-app").remaining == 0


def test_token_limits_count_after_redis_forgot_its_scripts(database_url, tmp_path, user):
    """A Redis restarted or flushed no longer knows the scripts: the request is counted all
    the same (the library loads them again)."""
    server = OwnRedis()
    server.start()
    try:
        node = make_app(database_url, tmp_path, REDIS_URL=server.url, TOKEN_RATE_LIMIT="1/minute")
        try:
            with node.app_context():
                row, secret = clients.create("one", [], grant_types=["client_credentials"])
            browser = Browser(https_client(node))
            server_client = redis.Redis.from_url(server.url)
            server_client.script_flush()
            assert token(browser, row.client_id, secret).status_code == 200
            assert token(browser, row.client_id, secret).status_code == 429
            # Counted in Redis, not in the memory kept for when Redis does not answer.
            assert not node.extensions["idp.throttle"]._degraded
            assert server_client.keys("*token*")
            server_client.close()
        finally:
            with node.app_context():
                _db.session.remove()
                _db.engine.dispose()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "key",
    ["PASSWORD_CHECK_RATE_LIMIT", "REGISTRATION_RATE_LIMIT"]
    + ["RESET_REQUEST_RATE_LIMIT", "RESET_EMAIL_RATE_LIMIT"],
)
@pytest.mark.parametrize("value", ["lots", "0/hour", 10])
def test_bad_limits_are_refused_by_name(database_url, tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"IDP_{key}: .* is not a rate limit"):
        make_app(database_url, tmp_path, **{key: value})


def test_the_defaults_are_those_of_the_security_section(app):
    cfg = app.config
    assert cfg["PASSWORD_CHECK_RATE_LIMIT"] == "60/minute"
    assert cfg["REGISTRATION_RATE_LIMIT"] == "10/hour"
    assert cfg["RESET_EMAIL_RATE_LIMIT"] == "5/hour"
    assert cfg["RESET_REQUEST_RATE_LIMIT"] == "20/hour"
