"""The one comparable form of a username or e-mail address: NFKC, case-folded, trimmed."""

from __future__ import annotations

import unicodedata


def fold(name: str) -> str:
    """`name` as the lockout counts it and the connectors and account lookups receive it:
    every variant that a directory would match as the same text (`ＡＤＡ`, `Ada `, `ada`)
    gives the same string.

    NFKC, case-folded, NFKC again (Unicode's NFKC_Casefold: folding can undo the first
    normalisation), then stripped of surrounding white space (NFKC makes U+3000 a space).
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return folded.strip()
