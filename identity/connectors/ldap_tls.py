"""TLS for ldap3 with the standard library's own certificate and host-name checks.

ldap3 2.9.1 turns Python's host-name check off and runs its own, which on Python 3.12+ (where
`ssl.match_hostname` is gone) only matches DNS names: an `ldaps://127.0.0.1` URL failed there
with a certificate that names the address. Here OpenSSL checks the name or IP address during
the handshake, the same way on every Python.
"""

from __future__ import annotations

import ssl

from ldap3 import Tls


class CheckedTls(Tls):
    """An ldap3 Tls whose sockets are wrapped by a default SSLContext, host name checked."""

    def wrap_socket(self, connection, do_handshake=False):
        context = ssl.create_default_context(cafile=self.ca_certs_file)
        if self.validate == ssl.CERT_NONE:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection.socket = context.wrap_socket(
            connection.socket,
            server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake,
        )
