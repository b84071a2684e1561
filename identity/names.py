"""Names people type (usernames, e-mail addresses): the form that keys lockouts and finds
accounts (NFKC, case-folded, trimmed), and the form that connectors receive (NFKC, trimmed)."""

from __future__ import annotations

import unicodedata


def fold(name: str) -> str:
    """`name` as lockouts, limits and account lookups compare it: every variant that a
    directory could match as the same text (`ＡＤＡ`, `Ada `, `ada`) gives the same string.

    NFKC, case-folded, NFKC again (Unicode's NFKC_Casefold: folding can undo the first
    normalisation), then stripped of surrounding white space (NFKC makes U+3000 a space).
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return folded.strip()


def normal(name: str) -> str:
    """`name` as connectors receive it: NFKC and trimmed, its case kept.

    Directories fold case themselves, each its own way: OpenLDAP matches `ａda` as `ada` but
    `strasse` not as `straße`, so a full case fold sent to it would lose the `straße`
    entry. Every name a directory takes as one is one under fold(), which keys the lockout.
    """
    return unicodedata.normalize("NFKC", name).strip()
