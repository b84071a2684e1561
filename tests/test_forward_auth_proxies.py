"""Real nginx and Caddy (Debian's packages, run as our own processes on loopback) in front of
a small app, asking this service at /forward-auth/nginx and /forward-auth; headless Chromium
maps the made-up *.example.test names to 127.0.0.1 and walks through: not signed in, sign
in, back at the app with the headers; a group that is not allowed; a forged Remote-User;
sign-out. The proxy configurations are the ones docs/forward-auth.md shows, with test paths."""

from __future__ import annotations

import html
import http.server
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from flask import Flask
from playwright.sync_api import BrowserContext, Playwright, sync_playwright
from ports import listen_port
from test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, shots

from conftest import dispose, make_app
from identity import certs
from identity.auth import accounts
from identity.extensions import db
from identity.forward_auth import cookie, rules
from identity.models import User
from servers import https_server, nss_home

pytestmark = pytest.mark.browser

DOMAIN = "example.test"
HOSTS = ["id.example.test", "app.example.test", "staff.example.test"]
USERNAME, PASSWORD = "grace", "a few unrelated words here"
STARTUP = 20  # seconds for a proxy to answer
REMOTE = ("Remote-User", "Remote-Email", "Remote-Name", "Remote-Groups")

ROOT = Path(__file__).resolve().parent.parent
# The directives that decide what reaches the app: the documentation's must be the tested ones.
DECIDING = {
    "nginx": (
        "auth_request",
        "error_page",
        "proxy_set_header",
        "proxy_pass_request_body",
        "internal",
        "map ",
        "default ",
        '"~',
    ),
    "caddy": ("request_header", "uri ", "copy_headers", "route", "header_up"),
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Path:
    """One local CA and a certificate for loopback and every made-up host name."""
    folder = tmp_path_factory.mktemp("fa-certs")
    certs.ensure(folder, certs.hosts_for("localhost") + HOSTS)
    return folder


@pytest.fixture(scope="module")
def idp(database_url, tmp_path_factory, tls) -> Iterator[SimpleNamespace]:
    """This service on https://id.example.test:<port>, with a person and two rules: the app
    for anyone signed in, the staff site for the group staff."""
    tmp = tmp_path_factory.mktemp("fa-idp")

    def build(port: int):
        app = make_app(
            database_url,
            tmp,
            ISSUER=f"https://id.example.test:{port}",
            FORWARD_AUTH_COOKIE_DOMAIN=DOMAIN,
            CERTS_DIR=str(tls),
        )
        with app.app_context():
            db.create_all()
            user = accounts.create_local(
                USERNAME, "grace@example.org", PASSWORD, name="Grace Hopper"
            )
            user.email_verified = True
            user.is_admin = True
            for host, groups in (("app.example.test", []), ("staff.example.test", ["staff"])):
                rules.add(rules.check(host, "/", groups, None))
            db.session.commit()
        return app

    with https_server(build, tls) as (app, port):
        yield SimpleNamespace(app=app, port=port, url=f"https://id.example.test:{port}")
    dispose(app)


class _Echo(http.server.BaseHTTPRequestHandler):
    """The protected app: shows every header whose name starts with "remote", as received
    (Remote_User too), and the Cookie headers. Plain http.server rather than Werkzeug, which
    drops header names with underscores itself and would hide whether the proxy passed them
    on."""

    def do_GET(self):  # noqa: N802 - http.server's name
        lines = [
            f"<li>{html.escape(name)}: {html.escape(value)}</li>"
            for name, value in self.headers.items()
            if name.lower().startswith("remote")
        ]
        path = html.escape(self.path)
        cookies = html.escape("; ".join(self.headers.get_all("Cookie") or []))
        body = (
            f"<h1>protected app</h1><p id=path>{path}</p><ul>{''.join(lines)}</ul>"
            f"<p id=cookie>{cookies}</p>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture(scope="module")
def backend(tls) -> Iterator[int]:
    """The app over HTTPS on a free loopback port, in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / certs.TLS_CERT, tls / certs.TLS_KEY)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def _wait(proc: subprocess.Popen, port: int, name: str, logs: Path) -> None:
    """Until the proxy accepts connections on `port` (or has exited: its logs then)."""
    deadline = time.monotonic() + STARTUP
    while True:
        if proc.poll() is not None:
            found = "".join(p.read_text() for p in sorted(logs.glob("*.log")))
            pytest.fail(f"{name} exited ({proc.returncode}):\n{found}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not listen on 127.0.0.1:{port} in {STARTUP} s")
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _binary(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if not found:
        pytest.fail(f"{name} not found: run `make test-deps` (installs nginx and caddy)")
    return found


def nginx_config(work: Path, port: int, idp, backend: int, tls: Path) -> str:
    ca, cert, key = tls / certs.CA_CERT, tls / certs.TLS_CERT, tls / certs.TLS_KEY
    temp = " ".join(
        f"{kind}_temp_path {work}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  {temp}
  # The Cookie header without the forward-auth cookie, for the app. The first match decides:
  # the name twice (a site under the domain can set another): no cookie at all; at the end;
  # anywhere else (the name at the start of the header or after a ";").
  map $http_cookie $cookie_without_idp {{
    default $http_cookie;
    "~(^|;)\\s*__Secure-idp-forward-auth=.*;\\s*__Secure-idp-forward-auth=" "";
    "~^(?<before>.*?);\\s*__Secure-idp-forward-auth=[^;]*$" "$before";
    "~^(?<before>(.*;\\s*)?)__Secure-idp-forward-auth=[^;]*(;\\s*)?(?<after>.*)$" "$before$after";
  }}
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name app.example.test staff.example.test;
    ssl_certificate {cert};
    ssl_certificate_key {key};

    location / {{
      auth_request /_forward_auth;
      # Sign in first: the service's 401 carries the sign-in address in Location.
      auth_request_set $forward_auth_login $upstream_http_location;
      error_page 401 =302 $forward_auth_login;
      # The service cannot check now (its directory is unreachable: 503), or cannot be
      # reached: nginx would show its own 500.
      error_page 500 = @forward_auth_unavailable;
      # Only what the service said reaches the app: these replace whatever the client sent,
      # and an empty value sends no header at all.
      auth_request_set $forward_auth_user $upstream_http_remote_user;
      auth_request_set $forward_auth_email $upstream_http_remote_email;
      auth_request_set $forward_auth_name $upstream_http_remote_name;
      auth_request_set $forward_auth_groups $upstream_http_remote_groups;
      proxy_set_header Remote-User $forward_auth_user;
      proxy_set_header Remote-Email $forward_auth_email;
      proxy_set_header Remote-Name $forward_auth_name;
      proxy_set_header Remote-Groups $forward_auth_groups;
      # The app gets its own cookies, not the one that opens every site under the domain.
      proxy_set_header Cookie $cookie_without_idp;
      proxy_pass https://127.0.0.1:{backend};
      proxy_ssl_trusted_certificate {ca};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
    }}

    location @forward_auth_unavailable {{
      default_type text/plain;
      add_header Retry-After 60 always;
      return 503 "Your access cannot be checked right now. Try again in a minute.\n";
    }}

    location = /_forward_auth {{
      internal;
      proxy_pass https://127.0.0.1:{idp.port}/forward-auth/nginx;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_ssl_trusted_certificate {ca};
      proxy_ssl_verify on;
      proxy_ssl_name id.example.test;
      proxy_ssl_server_name on;
    }}
  }}
}}
"""


def caddy_config(work: Path, port: int, idp, backend: int, tls: Path) -> str:
    ca, cert, key = tls / certs.CA_CERT, tls / certs.TLS_CERT, tls / certs.TLS_KEY
    return f"""
{{
  admin off
  auto_https off
  storage file_system {work}/data
}}

https://app.example.test:{port}, https://staff.example.test:{port} {{
  bind 127.0.0.1
  tls {cert} {key}
  route {{
    # Whatever the client sent under these names never reaches the app, however spelled
    # (CGI-style servers read Remote_User as Remote-User); then only what the service says.
    request_header -Remote-*
    request_header -Remote_*
    forward_auth https://127.0.0.1:{idp.port} {{
      uri /forward-auth
      copy_headers Remote-User Remote-Email Remote-Name Remote-Groups
      transport http {{
        tls_trusted_ca_certs {ca}
        tls_server_name id.example.test
      }}
    }}
    reverse_proxy https://127.0.0.1:{backend} {{
      # The app gets its own cookies, not the one that opens every site under the domain
      # (every one of that name, wherever it stands; then no ";" left at the start). "$1"
      # is the empty group "()": Caddy 2.6 reads an empty "" replacement as none at all.
      header_up Cookie "()(^|;\\s*)__Secure-idp-forward-auth=[^;]*" "$1"
      header_up Cookie "()^;\\s*" "$1"
      transport http {{
        tls_trusted_ca_certs {ca}
        tls_server_name localhost
      }}
    }}
  }}
}}
"""


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def proxy(request, idp, backend, tls, tmp_path_factory) -> Iterator[SimpleNamespace]:
    with running(
        request.param, tmp_path_factory.mktemp(f"fa-{request.param}"), idp, backend, tls
    ) as p:
        yield p


@contextmanager
def running(kind: str, work: Path, idp, backend: int, tls: Path) -> Iterator[SimpleNamespace]:
    """nginx or Caddy, configured as the documentation says, for the service at `idp.port`."""
    port = listen_port()
    stderr = (work / "stderr.log").open("w")
    if kind == "nginx":
        conf = work / "nginx.conf"
        conf.write_text(nginx_config(work, port, idp, backend, tls))
        command = [
            _binary("nginx"),
            "-p",
            str(work),
            "-e",
            str(work / "error.log"),
            "-c",
            str(conf),
        ]
        env = os.environ
    else:
        conf = work / "Caddyfile"
        conf.write_text(caddy_config(work, port, idp, backend, tls))
        command = [_binary("caddy"), "run", "--config", str(conf), "--adapter", "caddyfile"]
        env = {
            **os.environ,
            "HOME": str(work),
            "XDG_DATA_HOME": str(work),
            "XDG_CONFIG_HOME": str(work),
        }
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=work)
    try:
        _wait(proc, port, kind, work)
        yield SimpleNamespace(
            kind=kind,
            app=f"https://app.example.test:{port}",
            staff=f"https://staff.example.test:{port}",
            port=port,
            work=work,
        )
    finally:
        _stop(proc)
        stderr.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


def launch(playwright: Playwright, home: Path, **options) -> BrowserContext:
    context = playwright.chromium.launch_persistent_context(
        str(home / "profile"),
        executable_path=CHROMIUM,
        headless=True,
        args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1"],
        env={**os.environ, "HOME": str(home)},
        timeout=TIMEOUT_MS,
        **options,
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def _headers_shown(page) -> dict[str, str]:
    """The Remote-* headers the app received with a value (Caddy copies an empty
    Remote-Groups as an empty header, nginx sends none)."""
    shown = {}
    for item in page.locator("li").all_inner_texts():
        name, _, value = item.partition(":")
        if value.strip():
            shown[name.lower()] = value.strip()
    return shown


def test_sign_in_groups_forged_headers_and_sign_out_through_a_real_proxy(
    proxy, idp, tls, playwright, tmp_path
):
    home = nss_home(tmp_path / "home", tls / certs.CA_CERT)
    # A client that sends its own Remote-User and the rest: the app must never see them.
    forged = {name: "admin" for name in REMOTE} | {"Remote_User": "admin"}
    context = launch(playwright, home, extra_http_headers=forged)
    try:
        page = context.new_page()
        # Not signed in: the proxy sends the browser to sign in, with the original address.
        page.goto(f"{proxy.app}/wiki/Start?x=1&y=%C3%A9")
        assert page.url.startswith(f"{idp.url}/login?"), page.url
        page.fill("input[name=username]", USERNAME)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{proxy.app}/**")
        assert page.url == f"{proxy.app}/wiki/Start?x=1&y=%C3%A9"
        assert page.locator("h1").inner_text() == "protected app"
        assert _headers_shown(page) == {
            "remote-user": USERNAME,
            "remote-email": "grace@example.org",
            "remote-name": "Grace Hopper",
        }, proxy.kind
        # Another page of the same site: no new sign-in.
        page.goto(f"{proxy.app}/other")
        assert page.url == f"{proxy.app}/other"
        assert _headers_shown(page)["remote-user"] == USERNAME

        # A site for the group staff: signed in, but not allowed.
        response = page.goto(f"{proxy.staff}/")
        assert response.status == 403
        assert "protected app" not in page.content()
        shots(page, "forward-auth", f"forbidden-{proxy.kind}")
        # Once in the group (the directory says so), the same cookie passes.
        with idp.app.app_context():
            User.find(USERNAME).groups = ["staff"]
            db.session.commit()
        page.goto(f"{proxy.staff}/")
        assert _headers_shown(page)["remote-groups"] == "staff"
        with idp.app.app_context():
            User.find(USERNAME).groups = []
            db.session.commit()

        # The admin console's page of rules, to look at.
        page.goto(f"{idp.url}/admin/forward-auth")
        assert "staff.example.test/" in page.content()
        shots(page, "forward-auth", "admin-rules")
        page.click("a[aria-label='Remove the rule for staff.example.test/']")
        assert "nobody can reach" in page.content()
        shots(page, "forward-auth", "admin-remove")

        # Sign out at the service: the app asks again.
        page.goto(f"{idp.url}/account")
        page.click("form[action='/logout'] button")
        page.wait_for_load_state()
        # The browser no longer holds the domain's cookie, not only a dead one.
        assert cookie.NAME not in {c["name"] for c in context.cookies()}, proxy.kind
        page.goto(f"{proxy.app}/again")
        assert page.url.startswith(f"{idp.url}/login?"), page.url
    finally:
        context.close()


def _cookie_names(received: str) -> list[str]:
    return [part.split("=", 1)[0].strip() for part in received.split(";") if part.strip()]


def test_the_app_gets_its_own_cookies_but_never_the_forward_auth_cookie(
    proxy, idp, tls, playwright, tmp_path
):
    """The forward-auth cookie opens every site under the domain: the proxy takes it out of
    the request to the app, which could otherwise replay it elsewhere; the app's own cookies
    (its host's and the domain's) pass as they were."""
    home = nss_home(tmp_path / "home", tls / certs.CA_CERT)
    context = launch(playwright, home)
    try:
        context.add_cookies(
            [
                {"name": "app-session", "value": "kept", "url": proxy.app},
                {"name": "theme", "value": "dark", "domain": f".{DOMAIN}", "path": "/"},
            ]
        )
        page = context.new_page()
        page.goto(f"{proxy.app}/cookies")
        page.fill("input[name=username]", USERNAME)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{proxy.app}/**")
        (ours,) = [c for c in context.cookies() if c["name"] == cookie.NAME]
        received = page.locator("#cookie").inner_text()
        assert sorted(_cookie_names(received)) == ["app-session", "theme"], proxy.kind
        assert ours["value"] not in received
    finally:
        context.close()

    # Wherever the cookie stands in the header, and however often: the rest stays.
    n, v = cookie.NAME, ours["value"]
    session = requests.Session()
    session.trust_env = False
    for sent, kept in [
        (f"{n}={v}", []),
        (f"{n}={v}; a=1", ["a"]),
        (f"a=1; {n}={v}; b=2", ["a", "b"]),
        (f"a=1;{n}={v};b=2", ["a", "b"]),
        (f"a=1; {n}={v}", ["a"]),
        (f"x{n}=also-kept; {n}={v}", [f"x{n}"]),
        # A second cookie of the name (a site under the domain can set one): none of them
        # reaches the app (nginx then sends no cookie at all).
        (f"a=1; {n}={v}; {n}=another", None),
    ]:
        r = session.get(
            f"https://127.0.0.1:{proxy.port}/echo",
            headers={"Host": proxy.app.removeprefix("https://"), "Cookie": sent},
            allow_redirects=False,
            verify=str(tls / certs.CA_CERT),
            timeout=10,
        )
        assert r.status_code == 200, (proxy.kind, sent, r.status_code)
        (received,) = re.findall(r"<p id=cookie>(.*?)</p>", r.text)
        received = html.unescape(received)
        assert v not in received and "another" not in received, (proxy.kind, sent, received)
        assert n not in _cookie_names(received), (proxy.kind, sent, received)
        if kept is not None:
            assert _cookie_names(received) == kept, (proxy.kind, sent, received)


def test_a_forged_header_without_a_cookie_gets_nowhere(proxy, tls):
    """Straight to the proxy, no browser: Remote-User alone is sent to sign in."""
    session = requests.Session()
    session.trust_env = False
    r = session.get(
        f"https://127.0.0.1:{proxy.port}/",
        headers={"Host": proxy.app.removeprefix("https://"), "Remote-User": "admin"},
        allow_redirects=False,
        verify=str(tls / certs.CA_CERT),
        timeout=10,
    )
    assert r.status_code == 302, (r.status_code, r.text)
    assert "/forward-auth/login?rd=" in r.headers["Location"]


@pytest.mark.parametrize("kind", ["nginx", "caddy"])
def test_a_service_that_cannot_check_gets_the_person_a_503(kind, backend, tls, tmp_path):
    """The service answers 503 when it cannot check (a linked account's directory is
    unreachable): the person sees that, not a 500 (nginx turns every answer of its check but
    2xx, 401 and 403 into one) nor the app."""
    unavailable = Flask("unavailable")

    @unavailable.route("/forward-auth", defaults={"rest": ""})
    @unavailable.route("/forward-auth/<path:rest>")
    def check(rest):
        return "The directory cannot be reached.", 503, {"Retry-After": "30"}

    with https_server(lambda port: unavailable, tls) as (_, port):
        service = SimpleNamespace(port=port)
        with running(kind, tmp_path, service, backend, tls) as p:
            session = requests.Session()
            session.trust_env = False
            r = session.get(
                f"https://127.0.0.1:{p.port}/",
                headers={"Host": p.app.removeprefix("https://")},
                allow_redirects=False,
                verify=str(tls / certs.CA_CERT),
                timeout=10,
            )
    assert r.status_code == 503, (r.status_code, r.text)
    assert "protected app" not in r.text
    assert r.headers.get("Retry-After"), r.headers


@pytest.mark.parametrize("kind", ["nginx", "caddy"])
def test_the_documented_configurations_are_the_tested_ones(kind, tmp_path):
    build = nginx_config if kind == "nginx" else caddy_config
    tested = {
        line.strip()
        for line in build(tmp_path, 1, SimpleNamespace(port=2), 3, tmp_path).splitlines()
    }
    pages = [ROOT / "docs" / "forward-auth.md"] + ([ROOT / "README.md"] if kind == "caddy" else [])
    checked = 0
    for page in pages:
        for block in re.findall(rf"```{kind}\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                line = line.strip()
                if line.startswith(DECIDING[kind]):
                    assert line in tested, f"{page.name}: {line!r} is not what the test runs"
                    checked += 1
    assert checked >= (16 if kind == "nginx" else 12), checked
