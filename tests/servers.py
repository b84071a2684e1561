"""Helpers for browser tests: the app served over real HTTPS on loopback, and NSS databases
that make Chromium trust (or not) the local CA."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from identity import certs

NSS_NICKNAME = "idp-test-ca"


def _buffered(app):
    """The app with each response read whole and closed before Werkzeug writes it.

    Werkzeug's dev server skips the response's close() when reading the rest of a request
    fails (a browser that drops a connection, as Chromium does with cached static files): the
    static file then stays open until garbage collection, and its ResourceWarning lands in
    whichever test runs then. Responses here are small; reading them first costs nothing.
    """

    def buffered(environ, start_response):
        body = app(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            if hasattr(body, "close"):
                body.close()

    return buffered


def _not_ready(environ, start_response):
    """Answers until the real app is attached (the app needs the port in its ISSUER)."""
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


@contextmanager
def https_server(
    build_app: Callable[[int], Flask], certs_dir: Path, host: str = "127.0.0.1"
) -> Iterator[tuple[Flask, int]]:
    """Serve build_app(port) over HTTPS on a free port of `host`, in a thread.

    The socket is bound (port 0) before the app is built, so the port in the app's ISSUER
    is the one served: there is no window in which another process could take it.
    Yields (app, port); shuts the server down and closes its socket on exit.
    """
    certs.ensure(certs_dir, certs.hosts_for("localhost"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certs_dir / certs.TLS_CERT, certs_dir / certs.TLS_KEY)
    server: BaseWSGIServer = make_server(host, 0, _not_ready, threaded=True, ssl_context=context)
    # Werkzeug's listening socket shakes hands inside accept(), in the one serving thread: a
    # client that connects and sends nothing would stall every other request. Deferred, the
    # handshake happens in the request's own thread.
    server.socket.do_handshake_on_connect = False
    port = server.socket.getsockname()[1]
    try:
        app = build_app(port)
    except BaseException:
        server.server_close()
        raise
    server.app = _buffered(app)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"https-{port}",
        daemon=True,
    )
    thread.start()
    try:
        yield app, port
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def require_certutil() -> str:
    path = shutil.which("certutil")
    if not path:
        raise RuntimeError(
            "certutil not found: install libnss3-tools (apt-get install "
            "libnss3-tools); browser tests need it to trust the test CA"
        )
    return path


def nss_home(home: Path, ca_pem: Path | None) -> Path:
    """A HOME whose NSS database (~/.pki/nssdb, where Chromium on Linux looks for local trust
    anchors) is new and empty, then trusts `ca_pem` for TLS servers when it is given."""
    certutil = require_certutil()
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    db = f"sql:{nssdb}"
    subprocess.run(
        [certutil, "-d", db, "-N", "--empty-password"], check=True, capture_output=True, timeout=30
    )
    if ca_pem is not None:
        subprocess.run(
            [certutil, "-d", db, "-A", "-t", "C,,", "-n", NSS_NICKNAME, "-i", str(ca_pem)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        listed = subprocess.run(
            [certutil, "-d", db, "-L"], check=True, capture_output=True, text=True, timeout=30
        ).stdout
        if NSS_NICKNAME not in listed:
            raise RuntimeError(f"certutil did not add the CA to {nssdb}:\n{listed}")
    return home
