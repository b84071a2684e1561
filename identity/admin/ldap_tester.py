"""The LDAP binding tester: the steps a sign-in runs, each passed, failed or skipped, with its
time and the server's answer. It never shows or logs a password."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from ldap3 import BASE, SUBTREE, Connection
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from ldap3.utils.uri import parse_uri

from identity.connectors.ldap import LdapConnector
from identity.connectors.ldap_answers import PPOLICY_OID, ad_reason, ppolicy_error
from identity.connectors.ldap_connection import Settings, close, make_server
from identity.connectors.ldap_entries import first_text, stable_id
from identity.settings.ldap import normal_dn

RESULT_HINTS = {
    13: "the server requires an encrypted connection: use ldaps:// or IDP_LDAP_START_TLS=true",
    32: "that base DN does not exist in this directory",
    34: "that is not a valid DN",
    48: "this kind of bind is not allowed (anonymous binds may be off)",
    49: "wrong DN or password, or the account is locked",
    50: "this account may not read there: check the directory's access rules",
    53: "the server refused: often an empty password, or a password policy",
    87: "the filter is not valid LDAP filter syntax",
}
MISMATCH = "the certificate is not issued for this host name or IP address"
WITHHELD = (
    "not sent: the URL was changed, so the stored bind password is withheld; "
    "type the bind password to test this server"
)


@dataclass
class Step:
    name: str
    ok: bool
    ms: float
    detail: str
    answer: str | None = None
    hint: str | None = None
    # Not run (a missing password, an earlier step that failed): not passed, not failed.
    skipped: bool = False

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "ok" if self.ok else "failed"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "status": self.status}


def verdict(steps: list[Step]) -> str:
    """ "passed" (every step ran and passed), "failed" (a step failed) or "skipped" (none
    failed, some did not run)."""
    if not steps or any(s.status == "failed" for s in steps):
        return "failed"
    return "skipped" if any(s.skipped for s in steps) else "passed"


VERDICTS = {
    "passed": "all steps passed",
    "failed": "some steps failed",
    "skipped": "no step failed, but some were skipped",
}


def answer_of(result: dict | None) -> str | None:
    if not result or result.get("result") is None:
        return None
    text = f"{result['result']} {result.get('description', '')}".strip()
    if result.get("message"):
        text += f": {result['message']}"
    return text


def hint_of(result: dict | None, error: str | None = None) -> str | None:
    if error:
        low = error.lower()
        if "mismatch" in low or ("hostname" in low and "match" in low):
            return MISMATCH
        if "certificate verify failed" in low or "certificate_verify_failed" in low:
            return "the server's certificate does not chain to IDP_LDAP_CA_FILE (wrong CA?)"
        if "refused" in low:
            return "nothing listens at that host and port"
        if "timed out" in low or "timeout" in low:
            return "no answer in time: a firewall, a wrong host, or the server is overloaded"
        if "name or service not known" in low or "getaddrinfo" in low:
            return "the host name does not resolve"
        return None
    if not result:
        return None
    ad = ad_reason(result.get("message"))
    if ad:
        return f"Active Directory says {ad[1]}"
    return RESULT_HINTS.get(result.get("result"))


class _Run:
    def __init__(self):
        self.steps: list[Step] = []

    def step(self, name: str, fn: Callable[[], tuple[bool, str, dict | None]]) -> bool:
        started = time.perf_counter()
        try:
            ok, detail, result = fn()
            error = None
        except (LDAPException, OSError) as exc:
            ok, detail, result, error = False, f"{type(exc).__name__}: {exc}", None, str(exc)
        ms = round((time.perf_counter() - started) * 1000, 1)
        self.steps.append(Step(name, ok, ms, detail, answer_of(result), hint_of(result, error)))
        return ok

    def skip(self, name: str, why: str) -> None:
        self.steps.append(Step(name, False, 0.0, why, skipped=True))

    def name_the_certificate(self, url: str, s: Settings) -> None:
        """After a failed step whose hint is a host-name mismatch: say which names the
        certificate has and which setting to change (the hint alone says neither)."""
        last = self.steps[-1]
        if last.ok or last.hint != MISMATCH:
            return
        host = parse_uri(url)["host"]
        names = certificate_names(url, s)
        if not names:
            return
        last.hint = (
            f"the certificate names {', '.join(names)}, not {host}: set IDP_LDAP_URL to "
            f"one of those names (as in {url.replace(host, names[0], 1)}), or have the "
            f"directory's certificate issued for {host} too"
        )


def certificate_names(url: str, s: Settings) -> list[str]:
    """The DNS names and IP addresses the certificate at `url` is issued for (its
    subjectAltName), read over a connection that does not check it and that sends nothing
    but the StartTLS request. Empty when they cannot be read."""
    unchecked = dataclasses.replace(s, skip_verify=True)
    conn = Connection(
        make_server(url, unchecked),
        receive_timeout=s.read_timeout,
        raise_exceptions=False,
        auto_referrals=False,
        read_only=True,
    )
    try:
        conn.open()
        if url.startswith("ldap://") and not conn.start_tls():
            return []
        der = conn.socket.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (LDAPException, OSError, ValueError, x509.ExtensionNotFound):
        return []
    finally:
        close(conn)
    names = alt.get_values_for_type(x509.DNSName)
    addresses = alt.get_values_for_type(x509.IPAddress)
    return [*names, *(_url_host(a) for a in addresses)]


def _url_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def tls_facts(conn: Connection) -> str:
    """TLS version and the server certificate's subject, issuer and expiry."""
    sock = conn.socket
    version = getattr(sock, "version", lambda: None)()
    der = sock.getpeercert(binary_form=True) if version else None
    if not der:
        return "no TLS"
    cert = x509.load_der_x509_certificate(der)
    return (
        f"{version}; subject {cert.subject.rfc4514_string()}; "
        f"issuer {cert.issuer.rfc4514_string()}; "
        f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    )


def run(
    s: Settings,
    username: str | None = None,
    password: str | None = None,
    *,
    bind_password_withheld: bool = False,
) -> list[Step]:
    """Run every step a sign-in runs against the directory described by `s`."""
    r = _Run()
    conn: Connection | None = None
    used_url = ""
    try:
        for url in s.urls:
            candidate = Connection(
                make_server(url, s),
                receive_timeout=s.read_timeout,
                raise_exceptions=False,
                auto_referrals=False,
                read_only=True,
            )

            def connect(c=candidate, url=url):
                c.open()
                facts = tls_facts(c) if url.startswith("ldaps://") else "plain LDAP"
                return True, f"connected to {url}: {facts}", None

            if r.step(f"connect {url}", connect):
                if conn is None:
                    conn, used_url = candidate, url
                else:
                    close(candidate)
            else:
                close(candidate)
                r.name_the_certificate(url, s)
        if conn is None:
            r.skip("service bind", "not run: no server could be reached")
            return r.steps

        if s.start_tls and conn.server.host and not conn.server.ssl:

            def start_tls():
                ok = conn.start_tls()
                return ok, tls_facts(conn) if ok else "StartTLS failed", conn.result

            if not r.step("StartTLS", start_tls):
                r.name_the_certificate(used_url, s)
                return r.steps

        if s.bind_dn:
            if bind_password_withheld or not s.bind_password:
                r.skip(
                    f"service bind as {s.bind_dn}",
                    WITHHELD if bind_password_withheld else "not sent: no bind password",
                )
                return r.steps

            def service_bind():
                ok = conn.rebind(user=s.bind_dn, password=s.bind_password)
                return ok, f"bound as {s.bind_dn}" if ok else "bind refused", conn.result

            if not r.step(f"service bind as {s.bind_dn}", service_bind):
                return r.steps
        elif not s.user_dn_template:
            r.step(
                "service bind",
                lambda: (
                    s.anonymous_search,
                    "anonymous search"
                    if s.anonymous_search
                    else "no IDP_LDAP_BIND_DN, and IDP_LDAP_ANONYMOUS_SEARCH is off",
                    None,
                ),
            )

        if not username:
            return r.steps
        dn = _find_dn(r, conn, s, username)
        if dn is None:
            return r.steps
        if password is None:
            return r.steps
        user = _user_bind(r, s, used_url, dn, password)
        if user is None:
            return r.steps
        try:
            # As a sign-in does: read as the service account, or as the user without one.
            reader = conn if s.bind_dn or s.anonymous_search else user
            _attributes_and_groups(r, reader, s, dn, username)
        finally:
            close(user)
        return r.steps
    finally:
        if conn is not None:
            close(conn)


def _find_dn(r: _Run, conn: Connection, s: Settings, username: str) -> str | None:
    if s.user_dn_template:
        dn = s.user_dn_template.format(username=escape_rdn(username))
        r.step("user DN", lambda: (True, f"from the template: {dn}", None))
        return dn
    flt = s.user_filter.format(username=escape_filter_chars(username))
    found: list[str] = []

    def search():
        conn.search(s.user_base, flt, search_scope=SUBTREE, attributes=[])
        found.extend(e["dn"] for e in conn.response or [] if e.get("type") == "searchResEntry")
        ok = len(found) == 1
        count = {0: "no entry", 1: "1 entry"}.get(len(found), f"{len(found)} entries")
        detail = f"filter {flt} under {s.user_base}: {count}"
        if found:
            detail += ": " + "; ".join(found[:5])
        if len(found) > 1:
            detail += " (exactly one must match)"
        return ok, detail, conn.result

    return found[0] if r.step("user search", search) else None


def _user_bind(r: _Run, s: Settings, url: str, dn: str, password: str) -> Connection | None:
    """The connection bound as the user, or None when the bind failed."""
    if not password:
        r.skip(f"user bind as {dn}", "not sent: an empty password would bind anonymously")
        return None
    user = Connection(
        make_server(url, s),
        receive_timeout=s.read_timeout,
        raise_exceptions=False,
        auto_referrals=False,
        read_only=True,
    )

    def bind():
        user.open()
        if s.start_tls and not user.server.ssl:
            user.start_tls()
        ok = user.rebind(user=dn, password=password, controls=[(PPOLICY_OID, False, None)])
        policy = ppolicy_error(user.result or {})
        detail = "password accepted" if ok else "password refused"
        if policy:
            detail += f" (password policy: {policy})"
        return ok and not policy, detail, user.result

    if r.step(f"user bind as {dn}", bind):
        return user
    close(user)
    return None


def _attributes_and_groups(r: _Run, conn: Connection, s: Settings, dn: str, username: str) -> None:
    attrs: dict = {}

    def read():
        conn.search(dn, "(objectClass=*)", search_scope=BASE, attributes=s.user_attributes)
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if entries:
            attrs.update(entries[0]["raw_attributes"])
        subject = stable_id(attrs, s.id_attribute)
        parts = [f"{s.id_attribute}={subject or 'MISSING'}"]
        for label, name in (
            ("username", s.username_attribute),
            ("e-mail", s.email_attribute),
            ("name", s.name_attribute),
        ):
            parts.append(f"{label} ({name})={first_text(attrs, name) or '-'}")
        return bool(subject), "; ".join(parts), conn.result

    if not r.step("attributes", read):
        return
    connector = LdapConnector(s)
    try:

        def groups():
            found = connector.group_entries(
                dn, first_text(attrs, s.username_attribute) or username, attrs
            )
            names = sorted(set(found.values()))
            where = f"search under {s.group_base}" if s.group_base else s.memberof_attribute
            admin = ""
            if s.admin_group:
                member = normal_dn(s.admin_group) in found
                admin = f"; admin group {s.admin_group}: {'yes' if member else 'no'}"
            return True, f"{len(names)} from {where}: {', '.join(names) or '-'}{admin}", None

        r.step("groups", groups)
    finally:
        connector.close()


def as_text(steps: list[Step]) -> str:
    lines = []
    marks = {"ok": "OK  ", "failed": "FAIL", "skipped": "SKIP"}
    for st in steps:
        lines.append(f"{marks[st.status]} {st.name} ({st.ms:.0f} ms)")
        lines.append(f"     {st.detail}")
        if st.answer:
            lines.append(f"     server: {st.answer}")
        if st.hint:
            lines.append(f"     hint: {st.hint}")
    lines.append(VERDICTS[verdict(steps)])
    return "\n".join(lines)
