"""Back-channel logout deliveries: concurrent, each within a total deadline, kept in the
database until delivered (retried after a restart, with a fresh logout token), failures
audited and shown to admins; and never sent to loopback, link-local or metadata addresses
in production, checked at registration and on the resolved address at send time."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import parse_qs

import pytest
from joserfc import jwt
from oidc_rp import App, Person, logout_receiver, register, sign_in_and_allow
from sqlalchemy import select, update
from test_admin_console import make_admin

from conftest import dispose, make_app
from identity.extensions import db
from identity.models import Event, LogoutDelivery
from identity.oidc import client_rules, clients, destinations, logout

TIMEOUT = 4


class Trickle(http.server.BaseHTTPRequestHandler):
    """An app endpoint that reads the logout token, then answers one byte every 3 s (each
    read of the provider gets a byte before a per-read timeout), or answers at once when
    `server.healthy` is set."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        self.server.received.append({k: v[0] for k, v in parse_qs(body).items()})
        if self.server.healthy.is_set():
            self.send_response(200)
            self.end_headers()
            return
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 200:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                if self.server.stop.wait(3):
                    return
        except OSError:
            self.server.cut.set()  # the provider hung up

    def log_message(self, *args):
        pass


@contextmanager
def trickling_receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.received = []
    server.healthy, server.stop, server.cut = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_address[1]}/logout"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()


def failures(app, client_id: str) -> list[dict]:
    with app.app_context():
        events = db.session.scalars(
            select(Event).where(Event.type == "logout.failed").order_by(Event.id)
        ).all()
        return [e.data for e in events if e.data["client_id"] == client_id]


def sign_out_of(idp, *apps: App) -> Person:
    person = Person(idp)
    for app in apps:
        app.redeem(sign_in_and_allow(person, app))
    person.submit(person.open(f"{idp.url}/account"), {}, action="/logout")
    return person


@pytest.mark.parametrize("idp_settings", [{"BACKCHANNEL_LOGOUT_TIMEOUT": TIMEOUT}])
def test_a_trickling_app_delays_no_other_app_and_is_cut_off_at_the_deadline(idp):
    with trickling_receiver() as slow, logout_receiver() as fast:
        # Several trickling apps first: with one delivery after another, the fast app waits.
        slow_apps = [
            App(idp, register(idp, f"slow{i}", backchannel_logout_uri=slow.url)) for i in range(3)
        ]
        quick = App(idp, register(idp, "quick", backchannel_logout_uri=fast.url))
        started = time.monotonic()
        sign_out_of(idp, *slow_apps, quick)
        assert fast.arrived.wait(TIMEOUT), "the fast app did not get its token in time"
        fast_after = time.monotonic() - started
        # Each trickling delivery ends at its total deadline, not byte after byte.
        logout.wait_for_deliveries(TIMEOUT + 5)
        ended_after = time.monotonic() - started
    assert fast_after < TIMEOUT
    assert ended_after < TIMEOUT + 4, ended_after
    (body,) = fast.received
    claims = quick.verify(body["logout_token"]).claims
    assert claims["aud"] == quick.registered.client_id
    for app in slow_apps:
        (failure,) = failures(idp.app, app.registered.client_id)
        assert failure["error"] == f"no answer within {TIMEOUT} s" and failure["retry_at"]
    with idp.app.app_context():  # kept, to be retried
        assert len(db.session.scalars(select(LogoutDelivery)).all()) == 3


@pytest.mark.parametrize("idp_settings", [{"BACKCHANNEL_LOGOUT_TIMEOUT": 2}])
def test_a_failed_logout_is_retried_after_a_restart_with_a_fresh_token(
    idp, database_url, tmp_path, monkeypatch
):
    with trickling_receiver() as endpoint:
        app = App(idp, register(idp, backchannel_logout_uri=endpoint.url))
        sign_out_of(idp, app)
        logout.wait_for_deliveries(10)
        assert failures(idp.app, app.registered.client_id)
        first = app.verify(endpoint.received[0]["logout_token"]).claims

        # The provider restarts (a new process on the same database); the app is back.
        restarted = make_app(
            database_url,
            tmp_path,
            ISSUER=idp.url,
            SECRET_KEY=idp.app.config["SECRET_KEY"],  # the same deployment: its keys open
            BACKCHANNEL_LOGOUT_TIMEOUT=2,
        )
        endpoint.healthy.set()
        monkeypatch.setattr(logout, "RETRY_CHECK_INTERVAL", 0)  # look at every request
        # Until the backoff is over, nothing is sent.
        restarted.test_client().get("/healthz")
        logout.wait_for_deliveries(10)
        assert len(endpoint.received) == 1
        with restarted.app_context():
            db.session.execute(update(LogoutDelivery).values(next_attempt_at=0))
            db.session.commit()
        time.sleep(1.1)  # a second later: the new token's iat must differ
        restarted.test_client().get("/healthz")
        logout.wait_for_deliveries(10)
        assert len(endpoint.received) == 2
        with restarted.app_context():
            assert db.session.scalars(select(LogoutDelivery)).all() == []
            delivered = db.session.scalars(
                select(Event).where(Event.type == "logout.delivered").order_by(Event.id)
            ).all()
            assert [e.data["attempt"] for e in delivered] == [2]
        second = jwt.decode(endpoint.received[1]["logout_token"], app.jwks()).claims
        dispose(restarted)  # empties the tables: after the keys were read
    assert second["sid"] == first["sid"] and second["sub"] == first["sub"]
    assert second["jti"] != first["jti"] and second["iat"] > first["iat"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_logouts_are_listed_on_the_admin_app_page(app, db, browser):
    make_admin(app)
    uri = f"http://127.0.0.1:{closed_port()}/logout"
    with app.app_context():
        client, _ = clients.create("Wiki", ["https://wiki.example/cb"], backchannel_logout_uri=uri)
        client_id = client.client_id
        row = LogoutDelivery(
            client_id=client_id,
            subject="s",
            sid="x",
            next_attempt_at=0,
            expires_at=int(time.time()) + 3600,
        )
        db.session.add(row)
        db.session.commit()
        logout._attempt(app, row.id)
    assert browser.login("root").status_code == 302
    page = browser.get(f"/admin/apps/{client_id}").get_data(as_text=True)
    assert "Back-channel logout: last failures" in page
    assert "ConnectionRefusedError" in page and "1 logout waiting" in page


# -- destinations (item 10) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://metadata.google.internal/logout",
        "https://[fd00:ec2::254]/logout",
        "https://[fe80::1]/logout",
        "https://127.0.0.1/logout",
        "https://localhost/logout",
        "https://[::1]/logout",
        "https://[::ffff:169.254.169.254]/logout",
        "http://127.0.0.1:8080/logout",
    ],
)
@pytest.mark.parametrize("app_overrides", [{"ENV": "production"}])
def test_production_refuses_internal_back_channel_logout_uris_at_registration(app, db, uri):
    with app.app_context(), pytest.raises(client_rules.ClientError) as refused:
        clients.create("Wiki", ["https://wiki.example/cb"], backchannel_logout_uri=uri)
    assert "--backchannel-logout-uri" in str(refused.value)
    assert (
        "metadata" in str(refused.value)
        or "loopback" in str(refused.value)
        or ("link-local" in str(refused.value))
    )


@pytest.mark.parametrize("app_overrides", [{"ENV": "production"}])
def test_production_allows_private_ranges(app, db):
    with app.app_context():
        for uri in (
            "https://10.1.2.3/logout",
            "https://192.168.1.5/bcl",
            "https://intranet.corp/x",
        ):
            client, _ = clients.create(uri, ["https://wiki.example/cb"], backchannel_logout_uri=uri)
            assert client.client_metadata["backchannel_logout_uri"] == uri


def test_development_allows_loopback_http(app, db):
    with app.app_context():
        client, _ = clients.create(
            "Wiki", ["https://wiki.example/cb"], backchannel_logout_uri="http://127.0.0.1:9/l"
        )
        assert client.client_metadata["backchannel_logout_uri"] == "http://127.0.0.1:9/l"
        with pytest.raises(client_rules.ClientError, match="loopback only"):
            clients.update(client, backchannel_logout_uri="http://10.0.0.1/l")


def loopback_name() -> str | None:
    """A name other than localhost that this machine's resolver maps to a loopback address
    without DNS (its hosts file: Debian lists the host's own name there)."""
    import ipaddress
    from pathlib import Path

    for line in Path("/etc/hosts").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            loopback = ipaddress.ip_address(fields[0]).is_loopback
        except ValueError:
            continue
        for name in fields[1:]:
            if loopback and "." not in name and not name.startswith(("localhost", "ip6-")):
                return name
    return None


@pytest.mark.parametrize("app_overrides", [{"ENV": "production"}])
def test_production_refuses_a_name_that_resolves_to_loopback_at_send_time(app, db):
    """A name allowed at registration that resolves (now) to a loopback address: DNS
    rebinding. Nothing is sent; the failure says why. Resolved for real, by the system."""
    name = loopback_name()
    if name is None:
        pytest.skip("/etc/hosts names no host other than localhost on a loopback address")
    with logout_receiver() as receiver, app.app_context():
        port = receiver.server_address[1]
        uri = f"https://{name}:{port}/logout"
        client, _ = clients.create("Wiki", ["https://wiki.example/cb"], backchannel_logout_uri=uri)
        error = logout.send(uri, "token", 2)
    assert error.startswith(f"refused: {name} resolves to 127."), error
    assert receiver.received == []


@pytest.mark.parametrize("app_overrides", [{"ENV": "production"}])
def test_send_time_check_refuses_resolved_internal_addresses(app, monkeypatch):
    """The resolver's answer decides (a tiny seam: the answer of DNS for a name)."""
    answers = {"evil.example": "169.254.169.254", "fine.example": "10.0.0.7"}

    def fake_getaddrinfo(host, port, type=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with app.app_context():
        with pytest.raises(destinations.ForbiddenDestination, match="169.254.169.254"):
            destinations.resolve("evil.example", 443)
        assert destinations.resolve("fine.example", 443) == "10.0.0.7"
