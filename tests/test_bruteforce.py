"""Brute-force protection: sign-in lockouts per username and per client address, the token
endpoint's limits, client addresses behind trusted proxies, and the counters in real Redis,
or in memory when Redis is down."""

from __future__ import annotations

import base64
import logging
import subprocess
import time

import pytest
import redis
from audit_events import events
from ports import listen_port
from redis_server import REDIS_URL, count_checkouts
from test_admin_console import make_admin
from test_admin_users import create_form

from config import ConfigError
from conftest import PASSWORD, Browser, https_client, make_app
from identity.connectors.local import LocalConnector
from identity.extensions import db as _db
from identity.models import User
from identity.oidc import clients

WRONG = "not the password at all"
LOCKED = "Too many failed sign-in attempts."


def settings(**overrides):
    """Run the test with an app built with these settings."""
    return pytest.mark.parametrize("app_overrides", [overrides], ids=[""])


def attempt(browser: Browser, username: str, password: str = WRONG, *, ip=None, xff=None, **kw):
    headers = kw.pop("headers", {})
    if xff:
        headers["X-Forwarded-For"] = xff
    if ip:
        kw["environ_base"] = {"REMOTE_ADDR": ip}
    data = {"username": username, "password": password}
    return browser.post("/login", data, headers=headers, **kw)


def retry_after(response) -> int:
    value = int(response.headers["Retry-After"])
    assert value >= 1
    return value


# -- per username ---------------------------------------------------------------------------


@settings(LOCKOUT_ACCOUNT_FAILURES=3)
def test_account_locks_after_n_failures_even_for_the_right_password(app, browser, user):
    for _ in range(3):
        assert attempt(browser, "alice").status_code == 401
    locked = attempt(browser, "alice")
    assert locked.status_code == 429
    assert retry_after(locked) <= 900
    page = locked.get_data(as_text=True)
    assert LOCKED in page and "Wait 15 minutes" in page and 'name="password"' in page
    # The right password changes nothing, and signs nobody in.
    right = attempt(browser, "ALICE ", PASSWORD)
    assert right.status_code == 429 and LOCKED in right.get_data(as_text=True)
    assert browser.get("/account").headers["Location"].startswith("/login")
    # Programs get the JSON error, with the same status and header.
    as_json = attempt(browser, "alice", PASSWORD, headers={"Accept": "application/json"})
    assert as_json.status_code == 429 and retry_after(as_json) <= 900
    assert as_json.json["error"] == "too_many_requests"
    assert as_json.json["error_description"].startswith(LOCKED)

    (event,) = events(app, "signin.locked")
    assert event.user_id == user.id and event.ip == "127.0.0.1"
    assert event.data["reason"] == "account_failures" and event.data["username"] == "alice"
    dumped = repr([e.data for e in events(app, "signin.locked") + events(app, "signin.failure")])
    assert WRONG not in dumped and PASSWORD not in dumped


@settings(LOCKOUT_ACCOUNT_FAILURES=3)
def test_unknown_and_known_usernames_lock_alike(app, browser, user, monkeypatch):
    checks = []
    real = LocalConnector.authenticate
    monkeypatch.setattr(
        LocalConnector, "authenticate", lambda self, u, p: checks.append(u) or real(self, u, p)
    )
    answers = {}
    for name in ("alice", "nobody"):
        failures = [attempt(browser, name) for _ in range(3)]
        checked = len(checks)
        locked = [attempt(browser, name), attempt(browser, name, PASSWORD)]
        assert len(checks) == checked, "a locked attempt checked a password"
        answers[name] = failures + locked

    def shape(response, name):
        # The page apart from the per-request CSRF token and the echoed username.
        page = response.get_data(as_text=True).replace(name, "").split('name="csrf_token"')[0]
        return response.status_code, sorted(response.headers.keys()), page

    known, unknown = answers["alice"], answers["nobody"]
    assert [r.status_code for r in known] == [401, 401, 401, 429, 429]
    assert [shape(r, "alice") for r in known] == [shape(r, "nobody") for r in unknown]
    assert abs(retry_after(known[-1]) - retry_after(unknown[-1])) <= 1
    assert {e.data["username"] for e in events(app, "signin.locked")} == {"alice", "nobody"}


@settings(LOCKOUT_ACCOUNT_FAILURES=3)
def test_a_success_neither_counts_nor_resets_the_count(browser, user):
    for _ in range(5):
        assert attempt(browser, "alice", PASSWORD).status_code == 302
        browser.logout()
    # Failures age out of the window; a success in between does not wipe them.
    assert attempt(browser, "alice").status_code == 401
    assert attempt(browser, "alice").status_code == 401
    assert attempt(browser, "alice", PASSWORD).status_code == 302
    browser.logout()
    assert attempt(browser, "alice").status_code == 401
    assert attempt(browser, "alice", PASSWORD).status_code == 429


@settings(LOCKOUT_ACCOUNT_FAILURES=2, LOCKOUT_DURATION=1)
def test_a_lockout_ends(browser, user):
    attempt(browser, "alice")
    attempt(browser, "alice")
    assert attempt(browser, "alice", PASSWORD).status_code == 429
    deadline = time.monotonic() + 3
    while (status := attempt(browser, "alice", PASSWORD).status_code) == 429:
        assert time.monotonic() < deadline, "still locked long after Retry-After"
        time.sleep(0.2)
    assert status == 302


# -- the current password at /account/password ----------------------------------------------

NEW = "a brand new passphrase here"


def change_password(browser: Browser, current: str):
    data = {"current_password": current, "password": NEW, "confirm": NEW}
    return browser.post("/account/password", data, token_from="/account")


@settings(LOCKOUT_ACCOUNT_FAILURES=3)
def test_guessing_the_current_password_locks_like_a_sign_in(app, browser, user):
    """A session holder cannot guess the password at /account/password: wrong current
    passwords count toward the sign-in lockout of the username, and once it is locked even
    the right one is refused, there and at /login."""
    assert attempt(browser, "alice", PASSWORD).status_code == 302
    with app.app_context():
        before = _db.session.get(User, user.id).password_hash
    for _ in range(3):
        wrong = change_password(browser, WRONG)
        assert wrong.status_code == 400
        assert "That is not your current password." in wrong.get_data(as_text=True)
    locked = change_password(browser, PASSWORD)
    assert locked.status_code == 429 and retry_after(locked) <= 900
    assert LOCKED in locked.get_data(as_text=True)
    with app.app_context():
        assert _db.session.get(User, user.id).password_hash == before
    # The same lock as a sign-in with that username, in either direction.
    assert attempt(Browser(https_client(app)), "ALICE", PASSWORD).status_code == 429
    (event,) = events(app, "signin.locked")
    assert event.user_id == user.id and event.data["username"] == "alice"
    reasons = [e.data.get("reason") for e in events(app, "password.change_failed")]
    assert reasons == [None, None, None, "locked"]


@settings(LOCKOUT_ACCOUNT_FAILURES=3)
def test_failed_sign_ins_lock_the_password_change_too(app, browser, user):
    assert attempt(browser, "alice", PASSWORD).status_code == 302
    other = Browser(https_client(app))
    for _ in range(3):
        assert attempt(other, "alice").status_code == 401
    locked = change_password(browser, PASSWORD)
    assert locked.status_code == 429 and LOCKED in locked.get_data(as_text=True)


@settings(LOCKOUT_ACCOUNT_FAILURES=3)
def test_a_locked_admin_cannot_create_an_administrator(app, browser):
    """Creating an administrator asks for the admin's password: checked like a sign-in, so
    refused unchecked once the account is locked, with the lock's message."""
    make_admin(app)
    assert attempt(browser, "root", PASSWORD).status_code == 302
    for _ in range(3):
        assert attempt(Browser(https_client(app)), "root").status_code == 401
    refused = browser.post("/admin/users/new", create_form(admin="y", admin_password=PASSWORD))
    assert refused.status_code == 400 and LOCKED in refused.get_data(as_text=True)
    with app.app_context():
        assert User.find("carol") is None


# -- per client address ---------------------------------------------------------------------


@settings(LOCKOUT_IP_FAILURES=3)
def test_an_address_locks_across_usernames(app, browser, user):
    for name in ("bob", "carol", "dave"):
        assert attempt(browser, name).status_code == 401
    locked = attempt(browser, "alice", PASSWORD)
    assert locked.status_code == 429 and LOCKED in locked.get_data(as_text=True)
    assert attempt(browser, "alice", PASSWORD, ip="192.0.2.7").status_code == 302
    (event,) = events(app, "signin.locked")
    assert event.data["reason"] == "ip_failures" and event.ip == "127.0.0.1"
    assert "username" not in event.data


@settings(LOCKOUT_IP_FAILURES=3)
def test_forwarded_for_is_ignored_without_trusted_proxies(app, browser, user, caplog):
    caplog.set_level(logging.WARNING, logger="identity.throttle")
    for n in range(3):
        assert attempt(browser, f"user{n}", xff=f"198.51.100.{n}").status_code == 401
    assert attempt(browser, "alice", PASSWORD, xff="198.51.100.9").status_code == 429
    # Said once, in case a proxy does send it and IDP_TRUSTED_PROXIES was forgotten.
    (warning,) = caplog.records
    assert "IDP_TRUSTED_PROXIES is 0" in warning.getMessage()
    # Nor is X-Forwarded-Proto: a plain-HTTP request stays plain (no HSTS).
    plain = browser.client.get("/login", base_url="http://localhost", headers=PROTO_HTTPS)
    assert "Strict-Transport-Security" not in plain.headers


PROTO_HTTPS = {"X-Forwarded-Proto": "https"}


@settings(LOCKOUT_IP_FAILURES=3, TRUSTED_PROXIES=1)
def test_forwarded_for_is_honoured_with_one_trusted_proxy(app, browser, user):
    # What the client put left of the proxy's entry changes nothing.
    for n in range(3):
        xff = f"203.0.113.{n}, 198.51.100.1"
        assert attempt(browser, f"user{n}", xff=xff).status_code == 401
    assert attempt(browser, "alice", PASSWORD, xff="198.51.100.1").status_code == 429
    assert attempt(browser, "alice", PASSWORD, xff="10.0.0.1, 198.51.100.1").status_code == 429
    assert attempt(browser, "alice", PASSWORD, xff="198.51.100.2").status_code == 302
    (event,) = events(app, "signin.locked")
    assert event.ip == "198.51.100.1"
    secure = browser.client.get("/login", base_url="http://localhost", headers=PROTO_HTTPS)
    assert "Strict-Transport-Security" in secure.headers


# -- token endpoint ---------------------------------------------------------------------------


def basic(client_id: str, secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


CC = {"grant_type": "client_credentials"}


@pytest.fixture
def apps(app, db) -> dict:
    with app.app_context():
        one, one_secret = clients.create("one", [], grant_types=["client_credentials"])
        two, two_secret = clients.create("two", [], grant_types=["client_credentials"])
        return {"one": (one.client_id, one_secret), "two": (two.client_id, two_secret)}


@settings(TOKEN_RATE_LIMIT="3/minute")
def test_token_endpoint_limits_each_client(client, apps):
    one_id, one_secret = apps["one"]
    for _ in range(3):
        assert client.post("/token", data=CC, headers=basic(*apps["one"])).status_code == 200
    refused = client.post("/token", data=CC, headers=basic(*apps["one"]))
    assert refused.status_code == 429 and retry_after(refused) <= 60
    assert refused.json["error"] == "slow_down"
    # The same client in the form (client_secret_post) has the same budget; another has its own.
    form = {**CC, "client_id": one_id, "client_secret": one_secret}
    assert client.post("/token", data=form).status_code == 429
    assert client.post("/token", data=CC, headers=basic(*apps["two"])).status_code == 200


@settings(TOKEN_FAILURE_RATE_LIMIT="2/minute")
def test_token_endpoint_limits_failed_client_authentication_per_address(client, apps):
    one_id, _ = apps["one"]
    for _ in range(2):
        wrong = client.post("/token", data=CC, headers=basic(one_id, "guess"))
        assert wrong.status_code == 401 and wrong.json["error"] == "invalid_client"
    refused = client.post("/token", data=CC, headers=basic(*apps["one"]))
    assert refused.status_code == 429 and refused.json["error"] == "slow_down"
    assert retry_after(refused) <= 60
    elsewhere = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.post("/token", data=CC, headers=basic(*apps["one"]), environ_base=elsewhere).json[
        "access_token"
    ]


# -- storage: real Redis, and Redis down ------------------------------------------------------


def redis_settings(prefix: str) -> dict:
    return {"LOCKOUT_ACCOUNT_FAILURES": 3, "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix}


@pytest.fixture
def app_overrides(request) -> dict:
    if "redis_prefix" in request.fixturenames:
        return redis_settings(request.getfixturevalue("redis_prefix"))
    return {}


def test_lockout_counts_in_redis_for_every_node(
    app, browser, user, redis_prefix, database_url, tmp_path, caplog
):
    caplog.set_level(logging.WARNING, logger="identity.throttle")
    for _ in range(3):
        assert attempt(browser, "alice").status_code == 401
    assert attempt(browser, "alice", PASSWORD).status_code == 429
    assert redis.Redis.from_url(REDIS_URL).keys(f"{redis_prefix}:*"), "nothing counted in Redis"
    # Another node (the same secret key and Redis) knows of the lockout.
    secret = app.config["SECRET_KEY"]
    other = make_app(database_url, tmp_path, SECRET_KEY=secret, **redis_settings(redis_prefix))
    try:
        assert attempt(Browser(https_client(other)), "alice", PASSWORD).status_code == 429
    finally:
        with other.app_context():
            _db.engine.dispose()
    assert not caplog.records


def test_a_success_gives_its_place_back_in_redis(browser, user, redis_prefix):
    """Each attempt holds a place in the count while its password is checked (issue 14,
    item 5); a right password gives it back, in Redis as in memory."""
    for _ in range(5):
        assert attempt(browser, "alice", PASSWORD).status_code == 302
        browser.logout()
    assert attempt(browser, "alice").status_code == 401
    assert attempt(browser, "alice").status_code == 401
    assert attempt(browser, "alice", PASSWORD).status_code == 302
    browser.logout()
    assert attempt(browser, "alice").status_code == 401
    assert attempt(browser, "alice", PASSWORD).status_code == 429


def test_a_sign_in_asks_redis_twice(app, browser, user, redis_prefix, monkeypatch):
    """A password check is reserved in one round trip (a place in each failure window, each
    lock read after, the check counted) and its places given back in one: each round trip is
    a wait on Redis while the worker is held."""
    checkouts = count_checkouts(app, monkeypatch)
    assert attempt(browser, "alice", PASSWORD).status_code == 302
    assert len(checkouts) == 2
    browser.logout()
    checkouts.clear()
    assert attempt(browser, "alice").status_code == 401
    assert len(checkouts) == 2  # a wrong password: reserved, then each scope's count read


@settings(LOCKOUT_ACCOUNT_FAILURES=3, REDIS_URL=f"redis://:s3cret@127.0.0.1:{listen_port()}/0")
def test_redis_down_still_locks_in_memory_and_says_so(browser, user, caplog):
    caplog.set_level(logging.WARNING, logger="identity.throttle")
    for _ in range(3):
        assert attempt(browser, "alice").status_code == 401
    assert attempt(browser, "alice", PASSWORD).status_code == 429
    assert attempt(browser, "bob", ip="192.0.2.7").status_code == 401
    warnings = [r.getMessage() for r in caplog.records if r.name == "identity.throttle"]
    assert len(warnings) == 1 and "unreachable" in warnings[0], warnings
    assert "s3cret" not in caplog.text


class OwnRedis:
    """A redis-server of this test's own on a free port, to stop and start again."""

    def __init__(self) -> None:
        self.port = listen_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def keys(self) -> list[bytes]:
        return redis.Redis.from_url(self.url).keys("*")


@pytest.fixture
def own_redis():
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


def test_counting_goes_back_to_redis_when_it_answers_again(
    own_redis, database_url, tmp_path, user, caplog
):
    caplog.set_level(logging.INFO, logger="identity.throttle")
    node = make_app(database_url, tmp_path, REDIS_URL=own_redis.url, LOCKOUT_ACCOUNT_FAILURES=50)
    browser = Browser(https_client(node))
    try:
        assert attempt(browser, "alice").status_code == 401
        assert own_redis.keys(), "nothing counted in Redis"
        own_redis.stop()
        assert attempt(browser, "alice").status_code == 401  # counted in memory
        assert "unreachable" in caplog.text
        own_redis.start()  # empty: it keeps nothing on disk
        assert attempt(browser, "alice").status_code == 401  # not asked again yet (backoff)
        assert not own_redis.keys()
        node.extensions["idp.throttle"]._next_check = 0.0  # the backoff is over
        assert attempt(browser, "alice").status_code == 401
        assert "answers again" in caplog.text
        assert own_redis.keys(), "not counted in Redis again"
    finally:
        with node.app_context():
            _db.session.remove()
            _db.engine.dispose()


@settings(ENV="production")
def test_production_without_redis_says_once_that_each_process_counts_alone(browser, caplog):
    caplog.set_level(logging.WARNING, logger="identity.throttle")
    attempt(browser, "alice")
    attempt(browser, "bob")
    (warning,) = caplog.records
    assert "IDP_REDIS_URL is not set" in warning.getMessage()


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"LOCKOUT_ACCOUNT_FAILURES": 0}, "IDP_LOCKOUT_ACCOUNT_FAILURES must be at least 1"),
        ({"LOCKOUT_DURATION": "long"}, "IDP_LOCKOUT_DURATION must be a whole number"),
        ({"TOKEN_RATE_LIMIT": "lots"}, "IDP_TOKEN_RATE_LIMIT: 'lots' is not a rate limit"),
        ({"TOKEN_FAILURE_RATE_LIMIT": "0/minute"}, "IDP_TOKEN_FAILURE_RATE_LIMIT: '0/minute'"),
        ({"REDIS_URL": "http://cache:6379"}, "IDP_REDIS_URL must be a redis://"),
        ({"REDIS_TIMEOUT": 0}, "IDP_REDIS_TIMEOUT must be a positive number"),
        ({"TRUSTED_PROXIES": -1}, "IDP_TRUSTED_PROXIES must be a whole number"),
    ],
)
def test_bad_settings_are_refused_by_name(database_url, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_app(database_url, tmp_path, **overrides)
