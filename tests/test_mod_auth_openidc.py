"""A relying party written by others in C: Apache's mod_auth_openidc (Debian's
libapache2-mod-auth-openidc) protects a page with the provider over HTTPS, asks for
`offline_access`, and refreshes through its refresh handler, repeating its original scope
as it does (OpenID Connect Core 11)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, urljoin

import pytest
import requests
from oidc_rp import Person, idp, idp_settings, register
from ports import listen_port

__all__ = ["idp", "idp_settings"]  # the fixtures

MODULES = Path("/usr/lib/apache2/modules")
STARTUP = 20  # seconds for Apache to answer


def _apache2() -> str:
    binary = shutil.which("apache2") or (
        "/usr/sbin/apache2" if Path("/usr/sbin/apache2").exists() else None
    )
    if not binary or not (MODULES / "mod_auth_openidc.so").is_file():
        pytest.fail(
            "apache2 or mod_auth_openidc not found: run `make test-deps` (installs apache2 "
            "and libapache2-mod-auth-openidc)"
        )
    return binary


def _config(work: Path, port: int, idp, app: SimpleNamespace, redirect_uri: str) -> str:
    modules = ["mpm_event", "authn_core", "authz_core", "authz_user", "mime", "auth_openidc"]
    loads = "\n".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so" for m in modules)
    return f"""
ServerRoot {work}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {work}/httpd.pid
ErrorLog {work}/error.log
LogLevel warn auth_openidc:debug
DefaultRuntimeDir {work}
Mutex file:{work}
{loads}
TypesConfig /etc/mime.types
DocumentRoot {work}/htdocs
<Directory {work}/htdocs>
    Require all granted
</Directory>

OIDCProviderMetadataURL {idp.url}/.well-known/openid-configuration
OIDCCABundlePath {idp.ca}
OIDCSSLValidateServer On
OIDCClientID {app.client_id}
OIDCClientSecret {app.secret}
OIDCRedirectURI {redirect_uri}
OIDCCryptoPassphrase {secrets.token_hex(16)}
OIDCScope "openid offline_access"
OIDCAuthRequestParams prompt=consent
OIDCPKCEMethod S256
OIDCSessionType server-cache
OIDCCacheType shm
OIDCInfoHook access_token refresh_token
OIDCRemoteUserClaim sub

<Location /protected>
    AuthType openid-connect
    Require valid-user
</Location>
"""


@pytest.fixture
def apache(idp, tmp_path) -> Iterator[SimpleNamespace]:
    """Apache with mod_auth_openidc on http://127.0.0.1:<port>, registered with the
    provider as a confidential app allowed the refresh grant (its default scopes)."""
    binary = _apache2()
    port = listen_port()
    base = f"http://127.0.0.1:{port}"
    redirect_uri = f"{base}/protected/redirect_uri"
    app = register(idp, "apache", redirect_uris=[redirect_uri])
    work = tmp_path / "apache"
    (work / "htdocs" / "protected").mkdir(parents=True)
    (work / "htdocs" / "protected" / "index.html").write_text("<p>protected page</p>\n")
    conf = work / "httpd.conf"
    conf.write_text(_config(work, port, idp, app, redirect_uri))
    # -X: one process in the foreground, stopped with the test (no systemd, no apachectl).
    stderr = (work / "stderr.log").open("w")
    proc = subprocess.Popen(
        [binary, "-X", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr
    )
    log = work / "error.log"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"apache2 exited ({proc.returncode}): "
                    f"{(work / 'stderr.log').read_text()}{log.read_text() if log.exists() else ''}"
                )
            try:
                requests.get(f"{base}/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"apache2 did not answer on {base} in {STARTUP} s")
                time.sleep(0.1)
        yield SimpleNamespace(
            url=base, redirect_uri=redirect_uri, app=app, log=log, page=f"{base}/protected/"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()


def _log_tail(apache) -> str:
    lines = apache.log.read_text().splitlines() if apache.log.exists() else []
    return "\n".join(line for line in lines[-40:] if "oidc" in line or "error" in line)


def _sign_in_through_apache(idp, apache) -> Person:
    """A person opens the protected page: Apache sends them to the provider, they sign in and
    allow, Apache redeems the code and shows the page."""
    person = Person(idp)
    first = person.http.get(apache.page + "index.html", allow_redirects=False, timeout=10)
    assert first.status_code == 302, (first.status_code, _log_tail(apache))
    page = person.open(first.headers["Location"])
    page = person.sign_in(page)
    assert "Stay connected when you are not using it" in page.text, page.text
    back = person.submit(page, {"decision": "allow"})
    assert back.final.startswith(apache.redirect_uri), back.final
    url = back.final
    for _ in range(5):
        response = person.http.get(url, allow_redirects=False, timeout=10)
        if not response.is_redirect:
            break
        url = urljoin(url, response.headers["Location"])
    assert response.status_code == 200, (response.status_code, response.text, _log_tail(apache))
    assert "protected page" in response.text
    return person


def _session_tokens(person: Person, apache) -> dict:
    info = person.http.get(f"{apache.redirect_uri}?info=json", timeout=10)
    assert info.status_code == 200, (info.status_code, info.text, _log_tail(apache))
    return json.loads(info.text)


def test_mod_auth_openidc_refreshes_an_offline_access_grant_with_its_original_scope(idp, apache):
    person = _sign_in_through_apache(idp, apache)
    before = _session_tokens(person, apache)
    assert before.get("refresh_token"), before

    # The refresh handler: mod_auth_openidc sends grant_type=refresh_token with its
    # configured scope ("openid offline_access"), then back to return_to.
    return_to = apache.page + "index.html"
    response = person.http.get(
        f"{apache.redirect_uri}?refresh={quote(return_to, safe='')}"
        f"&access_token={quote(before['access_token'], safe='')}",
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, (response.status_code, response.text, _log_tail(apache))
    assert response.headers["Location"] == return_to, (
        response.headers["Location"],
        _log_tail(apache),
    )
    after = _session_tokens(person, apache)
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]
    assert person.http.get(return_to, timeout=10).status_code == 200
