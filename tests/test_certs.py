"""The local CA and TLS certificate under certs/."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading

import click
import pytest
from cryptography import x509
from werkzeug.serving import make_server

from identity import certs


@pytest.fixture
def made(tmp_path):
    d = tmp_path / "certs"
    written = certs.ensure(d, certs.hosts_for("localhost"))
    return d, written


def test_files_and_private_key_modes(made):
    d, written = made
    assert {p.name for p in written} == {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem"}
    for key in ("ca-key.pem", "server-key.pem"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
    assert not list(d.glob("*.tmp"))


def test_server_certificate_names_and_chain(made):
    d, _ = made
    cert = x509.load_pem_x509_certificate((d / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 398
    certs.verify_chain(d / "server.pem", d / "ca.pem")


def test_configured_host_is_added():
    assert certs.hosts_for("idp.internal")[-1] == "idp.internal"
    assert certs.hosts_for("localhost") == ["localhost", "127.0.0.1", "::1"]


def test_existing_files_are_never_overwritten(made):
    d, _ = made
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    assert certs.ensure(d, certs.hosts_for("localhost")) == []
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_force_replaces_everything(made):
    d, _ = made
    before = (d / "ca.pem").read_bytes()
    assert len(certs.ensure(d, certs.hosts_for("localhost"), force=True)) == 4
    assert (d / "ca.pem").read_bytes() != before
    certs.verify_chain(d / "server.pem", d / "ca.pem")


def test_missing_server_cert_is_remade_with_the_same_ca(made):
    d, _ = made
    ca = (d / "ca.pem").read_bytes()
    (d / "server.pem").unlink()
    assert [p.name for p in certs.ensure(d, ["localhost"])] == ["server-key.pem", "server.pem"]
    assert (d / "ca.pem").read_bytes() == ca


def test_ca_without_key_is_an_error_not_an_overwrite(made):
    d, _ = made
    (d / "ca-key.pem").unlink()
    ca = (d / "ca.pem").read_bytes()
    with pytest.raises(click.ClickException, match="exists without its key"):
        certs.ensure(d, ["localhost"])
    assert (d / "ca.pem").read_bytes() == ca


def test_chain_check_fails_for_a_foreign_ca(tmp_path, made):
    d, _ = made
    other = tmp_path / "other"
    certs.ensure(other, ["localhost"])
    with pytest.raises(click.ClickException, match="is not signed by"):
        certs.verify_chain(d / "server.pem", other / "ca.pem")


def test_a_tls_client_trusting_the_ca_connects(app, made):
    """A real TLS handshake against the app, verified with nothing but ca.pem."""
    d, _ = made
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(d / "server.pem", d / "server-key.pem")
    server = make_server("127.0.0.1", 0, app, ssl_context=server_ctx)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        for host in ("localhost", "127.0.0.1"):
            with (
                socket.create_connection(("127.0.0.1", server.port)) as raw,
                client_ctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.sendall(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                assert tls.recv(64).split(b" ")[1] == b"200"
        untrusting = ssl.create_default_context()
        with (
            socket.create_connection(("127.0.0.1", server.port)) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            untrusting.wrap_socket(raw, server_hostname="localhost")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
