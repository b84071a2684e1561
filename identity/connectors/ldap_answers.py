"""What the directory answers about an account: ppolicy response controls (OpenLDAP) and
Active Directory's "data NNN" codes, as reasons and messages for people."""

from __future__ import annotations

import logging

from pyasn1.codec.ber import decoder
from pyasn1.type import namedtype, namedval, tag, univ

from identity.connectors.base import AccountProblem

log = logging.getLogger("identity.ldap")

PPOLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"  # draft-behera-ldap-password-policy
INVALID_CREDENTIALS = 49
AD_DISABLED = 0x2  # userAccountControl ACCOUNTDISABLE


def expired() -> AccountProblem:
    return AccountProblem(
        "password_expired",
        "Your directory password has expired. Change it with your organisation's password "
        "tool, then sign in again.",
    )


def must_change() -> AccountProblem:
    return AccountProblem(
        "password_must_change",
        "Your directory password must be changed before you can sign in. Change it with "
        "your organisation's password tool, then sign in again.",
    )


# Active Directory puts the reason for a failed bind in "data NNN" of the diagnostic message.
AD_REASONS = {
    "525": ("user_not_found", "the user does not exist"),
    "52e": ("bad_credentials", "the password is wrong"),
    "530": ("logon_hours", "sign-in is not permitted at this time"),
    "531": ("workstation", "sign-in is not permitted from this workstation"),
    "532": ("password_expired", "the password has expired"),
    "533": ("disabled", "the account is disabled"),
    "701": ("account_expired", "the account has expired"),
    "773": ("password_must_change", "the password must be changed at next sign-in"),
    "775": ("locked", "the account is locked out"),
}


def ad_reason(message: str | None) -> tuple[str, str] | None:
    text = (message or "").lower()
    for code, reason in AD_REASONS.items():
        if f"data {code}" in text:
            return reason
    return None


class _PolicyWarning(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType(
            "timeBeforeExpiration",
            univ.Integer().subtype(
                implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 0)
            ),
        ),
        namedtype.NamedType(
            "graceAuthNsRemaining",
            univ.Integer().subtype(
                implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 1)
            ),
        ),
    )


class _PolicyResponse(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType(
            "warning",
            _PolicyWarning().subtype(
                explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 0)
            ),
        ),
        namedtype.OptionalNamedType(
            "error",
            univ.Enumerated(
                namedValues=namedval.NamedValues(
                    ("passwordExpired", 0),
                    ("accountLocked", 1),
                    ("changeAfterReset", 2),
                    ("passwordModNotAllowed", 3),
                    ("mustSupplyOldPassword", 4),
                    ("insufficientPasswordQuality", 5),
                    ("passwordTooShort", 6),
                    ("passwordTooYoung", 7),
                    ("passwordInHistory", 8),
                )
            ).subtype(implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 1)),
        ),
    )


def ppolicy_error(result: dict) -> str | None:
    """The password policy error a bind answer carries (OpenLDAP ppolicy), if any."""
    control = (result.get("controls") or {}).get(PPOLICY_OID)
    value = control.get("value") if control else None
    if not value:
        return None
    try:
        decoded, _ = decoder.decode(value, asn1Spec=_PolicyResponse())
    except Exception:  # noqa: BLE001 - a malformed control is logged, never fatal
        log.warning("undecodable password policy control: %r", value)
        return None
    error = decoded.getComponentByName("error")
    return str(error.prettyPrint()) if error.isValue else None
