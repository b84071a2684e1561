"""The directory's certificate is checked by name and by IP address, the same on every Python
(ldap3's own check, used on 3.12+, ignored IP addresses)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from identity import certs
from identity.connectors.base import ConnectorError
from identity.connectors.ldap_connection import Settings, close, open_connection


@contextmanager
def tls_listener(cert_dir) -> Iterator[int]:
    """A TLS server on 127.0.0.1 that completes handshakes and then holds the socket: enough
    for ldaps:// to open (or to fail at the certificate check)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_dir / certs.TLS_CERT, cert_dir / certs.TLS_KEY)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so that the loop sees `stop` (close() does not wake accept)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                held.append(context.wrap_socket(raw, server_side=True))
            except (ssl.SSLError, OSError):
                raw.close()  # the client refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for s in held:
            s.close()


def opened(url: str, ca_file: str, **settings) -> None:
    conn = open_connection(Settings(urls=(url,), ca_file=ca_file, **settings))
    close(conn)


@pytest.mark.parametrize(
    ("names", "host"),
    [(["127.0.0.1"], "127.0.0.1"), (["localhost"], "localhost")],
    ids=["ip-address", "dns-name"],
)
def test_a_certificate_naming_the_host_is_accepted(tmp_path, names, host):
    certs.ensure(tmp_path, names)
    with tls_listener(tmp_path) as port:
        opened(f"ldaps://{host}:{port}", str(tmp_path / certs.CA_CERT))


@pytest.mark.parametrize(
    ("names", "host", "why"),
    [
        (["localhost"], "127.0.0.1", "IP address mismatch"),
        (["127.0.0.1"], "localhost", "Hostname mismatch"),
        (["ldap.example.org"], "localhost", "Hostname mismatch"),
    ],
    ids=["ip-not-named", "name-not-named", "other-name"],
)
def test_a_certificate_for_another_host_is_refused(tmp_path, names, host, why):
    certs.ensure(tmp_path, names)
    with tls_listener(tmp_path) as port:
        with pytest.raises(ConnectorError, match=why):
            opened(f"ldaps://{host}:{port}", str(tmp_path / certs.CA_CERT))


def test_skip_verify_accepts_any_certificate(tmp_path):
    certs.ensure(tmp_path, ["ldap.example.org"])
    with tls_listener(tmp_path) as port:
        opened(f"ldaps://127.0.0.1:{port}", None, skip_verify=True)
