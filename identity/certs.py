"""A local CA and the TLS certificate it signs, for HTTPS in development, under certs/."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from flask import Blueprint, current_app

# pyOpenSSL 26 no longer builds certificate extensions (X509Extension is gone); its own
# backend, cryptography.x509, builds them, and pyOpenSSL verifies the chain we made.

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
TLS_CERT, TLS_KEY = "server.pem", "server-key.pem"
CA_DAYS, TLS_DAYS = 3650, 397  # browsers refuse server certificates valid over 398 days

bp = Blueprint("certs", __name__, cli_group="certs")


def ensure(directory: str | Path, hosts: list[str], *, force: bool = False) -> list[Path]:
    """Create what is missing (everything with force); return the files written."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if force or not (d / CA_CERT).exists() or not (d / CA_KEY).exists():
        if (d / CA_CERT).exists() and not force:
            raise click.ClickException(f"{d / CA_CERT} exists without its key; use --force")
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        written += [_write_key(d / CA_KEY, ca_key), _write(d / CA_CERT, ca_cert)]
        force = True  # a new CA needs a new server certificate
    if force or not (d / TLS_CERT).exists() or not (d / TLS_KEY).exists():
        ca_key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_certificate(key, ca_key, ca_cert, hosts)
        written += [_write_key(d / TLS_KEY, key), _write(d / TLS_CERT, cert)]
    verify_chain(d / TLS_CERT, d / CA_CERT)
    return written


def verify_chain(cert_path: Path, ca_path: Path) -> None:
    """Raise when the server certificate does not verify against the CA (pyOpenSSL)."""
    from OpenSSL import crypto  # here: only `make run` and `flask certs` check a chain

    store = crypto.X509Store()
    store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, ca_path.read_bytes()))
    leaf = crypto.load_certificate(crypto.FILETYPE_PEM, cert_path.read_bytes())
    try:
        crypto.X509StoreContext(store, leaf).verify_certificate()
    except crypto.X509StoreContextError as exc:
        raise click.ClickException(f"{cert_path} is not signed by {ca_path}: {exc}") from exc


def hosts_for(host: str) -> list[str]:
    """localhost and the loopback addresses, plus the configured host name."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    return hosts if host in hosts or not host else hosts + [host]


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Identity (local development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = _name("Identity local CA")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key, ca_key, ca_cert: x509.Certificate, hosts: list[str]
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = []
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=TLS_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _write(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key) -> Path:
    """Private keys: created with mode 0600 from the start, never briefly world-readable."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


@bp.cli.command("create")
@click.option("--force", is_flag=True, help="Replace existing CA, certificate and keys.")
def create_command(force: bool) -> None:
    """Create the local CA and the TLS certificate (existing files are kept)."""
    cfg = current_app.config
    written = ensure(cfg["CERTS_DIR"], hosts_for(cfg["HOST"]), force=force)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"certificates in {cfg['CERTS_DIR']} exist; --force replaces them")
