"""A relying party's view of the provider, for tests: the IdP served over real HTTPS on
loopback, a person's browser (requests, reading forms like a person would submit them), an
app using Authlib's OAuth 2.0 client, and a back-channel logout receiver."""

from __future__ import annotations

import http.server
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from conftest import PASSWORD, dispose, make_app
from identity import certs
from identity.auth import accounts
from identity.extensions import db
from identity.oidc import clients
from servers import https_server

CALLBACK = "https://app.example/callback"


@pytest.fixture
def idp_settings() -> dict:
    """Override in a test module (or parametrize) to change the provider's settings."""
    return {}


@pytest.fixture
def idp(database_url, tmp_path, idp_settings) -> Iterator[SimpleNamespace]:
    """The provider on https://localhost:<port> with one account (alice) and its CA file."""

    def build(port: int):
        app = make_app(database_url, tmp_path, ISSUER=f"https://localhost:{port}", **idp_settings)
        with app.app_context():
            db.create_all()
            accounts.create_local("alice", "alice@example.org", PASSWORD, name="Alice Liddell")
        return app

    with https_server(build, tmp_path / "certs") as (app, port):
        yield SimpleNamespace(
            app=app, url=f"https://localhost:{port}", ca=str(tmp_path / "certs" / certs.CA_CERT)
        )
    dispose(app)


def register(idp, name: str = "notes", **options) -> SimpleNamespace:
    options.setdefault("redirect_uris", [CALLBACK])
    with idp.app.app_context():
        client, secret = clients.create(name, options.pop("redirect_uris"), **options)
        return SimpleNamespace(
            client_id=client.client_id, secret=secret, public=client.public, name=name
        )


class _Forms(HTMLParser):
    """Each form of a page: its action and hidden inputs, as a browser submits them."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action") or "", "fields": {}})
        elif tag == "input" and self.forms and a.get("type") == "hidden" and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""


def page_form(page: str, action: str | None = None) -> dict:
    """The form posting to `action` (a substring), or the first one that does not sign out."""
    parser = _Forms()
    parser.feed(page)
    for form in parser.forms:
        if (action and action in form["action"]) or (
            not action and not form["action"].endswith("/logout")
        ):
            return form
    raise AssertionError(f"no form for {action!r} on the page")


class Person:
    """A browser: follows redirects on the provider, stops at the first one to an app."""

    def __init__(self, idp):
        self.idp = idp
        self.http = requests.Session()
        self.http.verify = idp.ca

    def open(self, url: str) -> requests.Response:
        for _ in range(10):
            response = self.http.get(url, allow_redirects=False, verify=self.idp.ca)
            location = response.headers.get("Location")
            if response.is_redirect and location:
                url = urljoin(url, location)
                if not url.startswith(self.idp.url):
                    response.final = url
                    return response
                continue
            response.final = url
            return response
        raise AssertionError("redirect loop")

    def submit(
        self, page: requests.Response, data: dict, action: str | None = None
    ) -> requests.Response:
        """Submit a form of the page with its hidden fields (CSRF token included), then
        follow as a browser would."""
        form = page_form(page.text, action)
        url = urljoin(page.final, form["action"])
        response = self.http.post(
            url,
            data={**form["fields"], **data},
            headers={"Referer": page.final},
            allow_redirects=False,
            verify=self.idp.ca,
        )
        if response.is_redirect:
            target = urljoin(url, response.headers["Location"])
            if not target.startswith(self.idp.url):
                response.final = target
                return response
            return self.open(target)
        response.final = url
        return response

    def sign_in(self, page: requests.Response, username="alice", password=PASSWORD):
        assert "/login" in page.final, page.final
        return self.submit(page, {"username": username, "password": password})


class App:
    """A relying party using Authlib's OAuth2Session, with PKCE S256 and a nonce."""

    def __init__(self, idp, registered: SimpleNamespace, scope="openid profile email"):
        self.idp = idp
        self.registered = registered
        self.session = OAuth2Session(
            registered.client_id,
            registered.secret,
            scope=scope,
            redirect_uri=CALLBACK,
            code_challenge_method="S256",
            token_endpoint_auth_method="none" if registered.public else "client_secret_basic",
        )
        self.session.verify = idp.ca

    def authorization_url(self, **extra) -> str:
        """A new request: fresh state, nonce and PKCE verifier, as an app makes each time."""
        self.verifier = secrets.token_urlsafe(48)
        self.nonce = secrets.token_urlsafe(16)
        url, self.state = self.session.create_authorization_url(
            f"{self.idp.url}/authorize", code_verifier=self.verifier, nonce=self.nonce, **extra
        )
        return url

    def callback_params(self, response: requests.Response) -> dict:
        assert response.final.startswith(CALLBACK), (response.status_code, response.final)
        return {k: v[0] for k, v in parse_qs(urlsplit(response.final).query).items()}

    def redeem(self, response: requests.Response, **extra) -> dict:
        return self.session.fetch_token(
            f"{self.idp.url}/token",
            authorization_response=response.final,
            code_verifier=self.verifier,
            verify=self.idp.ca,
            **extra,
        )

    def post(self, path: str, data: dict, auth: bool = True) -> requests.Response:
        credentials = (
            (self.registered.client_id, self.registered.secret)
            if auth and self.registered.secret
            else None
        )
        if self.registered.public:
            data = {"client_id": self.registered.client_id, **data}
        return requests.post(
            f"{self.idp.url}{path}", data=data, auth=credentials, verify=self.idp.ca, timeout=10
        )

    def jwks(self) -> KeySet:
        body = requests.get(f"{self.idp.url}/jwks.json", verify=self.idp.ca, timeout=10).json()
        return KeySet.import_key_set(body)

    def verify(self, token: str, jwks: KeySet | None = None, algorithms=("RS256",)):
        return jwt.decode(token, jwks or self.jwks(), algorithms=list(algorithms))


def sign_in_and_allow(person: Person, app: App, **extra) -> requests.Response:
    """The whole front channel: the app sends the person here, they sign in and allow."""
    page = person.open(app.authorization_url(**extra))
    if "/login" in page.final:
        page = person.sign_in(page)
    if "Allow" in page.text and page.status_code == 200:
        page = person.submit(page, {"decision": "allow"})
    return page


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        self.server.received.append({k: v[0] for k, v in parse_qs(body).items()})
        self.server.arrived.set()
        if self.server.hold is not None:
            self.server.hold.wait(20)  # a slow app: answers only when the test lets it
        self.send_response(200)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.server.answered.set()

    def log_message(self, *args):
        pass


@contextmanager
def logout_receiver(
    hold: threading.Event | None = None,
) -> Iterator[http.server.HTTPServer]:
    """An app's back-channel logout endpoint on http://127.0.0.1:<port>/logout."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.received, server.hold = [], hold
    server.arrived, server.answered = threading.Event(), threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/logout"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        if hold is not None:
            hold.set()
        server.shutdown()
        server.server_close()
