"""Authentication context classes (the ID token's `acr`): what the methods of a sign-in
(its RFC 8176 `amr`) are worth, and which class an app needs."""

from __future__ import annotations

from collections.abc import Iterable

# Weakest first. "0": one factor (OpenID Connect's level 0: no claim beyond it); "mfa": two
# factors; "phr": phishing-resistant, a passkey (bound to this origin by the browser) was used.
ZERO, MFA, PHR = "0", "mfa", "phr"
ORDER = (ZERO, MFA, PHR)
SUPPORTED = [PHR, MFA, ZERO]
REQUIRABLE = (MFA, PHR)


def of(amr: Iterable[str] | None) -> str:
    """The strongest class that the methods `amr` meet."""
    methods = set(amr or ())
    if methods & {"hwk", "swk"} and "mfa" in methods:
        return PHR
    if "mfa" in methods:
        return MFA
    return ZERO


def meets(amr: Iterable[str] | None, needed: str | None) -> bool:
    """Whether a sign-in with the methods `amr` satisfies the class `needed` (None: any)."""
    return needed is None or ORDER.index(of(amr)) >= ORDER.index(needed)


def needed(required: str | None, acr_values: str | None) -> str | None:
    """The class a sign-in must meet for an app that `required` one (or None) and asked with
    `acr_values` (space-separated, preferred first): meeting any asked value is enough, so
    the weakest known one counts; unknown values are ignored (the claim is voluntary)."""
    asked = [v for v in (acr_values or "").split() if v in ORDER]
    want = min(asked, key=ORDER.index) if asked else None
    candidates = [c for c in (required, want) if c]
    return max(candidates, key=ORDER.index) if candidates else None
