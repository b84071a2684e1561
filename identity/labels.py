"""What each way of signing in is called on the pages: one vocabulary for the account page,
the admin console and the audit log."""

from __future__ import annotations

LABELS = {
    "local": "Password",
    "ldap": "Company directory",
    "facebook": "Facebook",
    "google": "Google",
    "twitter": "X",
    "passkey": "Passkey",
}


def label(method: str) -> str:
    """The name people see for a connector or sign-in method; an unknown one as it is."""
    return LABELS.get(method, method)
