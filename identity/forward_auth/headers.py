"""The Remote-* headers a proxy hands to the app: who is signed in, in values that can hold
no line break and no non-ASCII byte (percent-encoded UTF-8)."""

from __future__ import annotations

from urllib.parse import quote

from sqlalchemy import Row

from identity.models import User

# Printable ASCII stays as typed, but "%" (so that decoding is unambiguous) and, in
# Remote-Groups, "," (the separator): everything else is percent-encoded UTF-8 (RFC 3986),
# which urllib.parse.unquote, decodeURIComponent and the like undo.
_KEPT = " !\"#$&'()*+-./:;<=>?@[]^_`{|}~"
NAMES = ("Remote-User", "Remote-Email", "Remote-Name", "Remote-Groups")


def encode(value: str, *, keep_comma: bool = True) -> str:
    return quote(value, safe=_KEPT + ("," if keep_comma else ""))


def of(user: User | Row) -> dict[str, str]:
    """The four headers for `user`. The e-mail address only when it was verified (an app
    must not take an unverified address as the person's); groups comma-separated."""
    groups = [g for g in user.groups or [] if isinstance(g, str)]
    return {
        "Remote-User": encode(user.username),
        "Remote-Email": encode(user.email) if user.email and user.email_verified else "",
        "Remote-Name": encode(user.name or ""),
        "Remote-Groups": ",".join(encode(g, keep_comma=False) for g in groups),
    }
