"""Why a new password would be among the first guesses: a common password or word, built on
the person's own username or e-mail address, or too few different characters."""

from __future__ import annotations

import re
import unicodedata
from functools import cache

# Fewer different characters than this is a repetition ("aaaaaaaaaaaa", "abababababab").
MIN_DISTINCT_CHARACTERS = 5
# A username or e-mail local part shorter than this is not looked for inside passwords.
MIN_IDENTIFIER_LENGTH = 3
# Digits, punctuation and spaces added before or after a listed password ("Password1234!").
_ADDED_AT_THE_ENDS = re.compile(r"^[\W\d_]+|[\W\d_]+$")


@cache
def _lists() -> tuple[dict[str, int], ...]:
    """zxcvbn's ranked lists, loaded once per process (about 0.1 s and 12 MiB): the 30,000
    most common passwords of a 10-million-password leak corpus, the 30,000 commonest English
    words (Wikipedia), 19,000 from films and TV, 15,000 names and surnames; lower-case."""
    from zxcvbn.matching import RANKED_DICTIONARIES

    passwords = RANKED_DICTIONARIES["passwords"]
    return (passwords, *(d for name, d in RANKED_DICTIONARIES.items() if name != "passwords"))


def fold(text: str) -> str:
    """Compatibility-normalised and case-folded: 'ＰＡＳＳＷＯＲＤ' is 'password'."""
    return unicodedata.normalize("NFKC", text).casefold()


def _cores(folded: str) -> set[str]:
    """The password, and the password without digits and symbols added at either end."""
    core = _ADDED_AT_THE_ENDS.sub("", folded)
    return {folded, core} if len(core) >= 4 else {folded}


def listed(password: str) -> str | None:
    """'password' when the password, ignoring case and digits or symbols added at either
    end, is a common password; 'word' when it is a common word or name; else None."""
    cores = _cores(fold(password))
    passwords, *words = _lists()
    if any(core in passwords for core in cores):
        return "password"
    if any(core in d for d in words for core in cores):
        return "word"
    return None


def too_little_variety(password: str) -> bool:
    """Fewer than MIN_DISTINCT_CHARACTERS different characters, or one straight run up or
    down the alphabet or the digits ('abcdefghijkl', '123456789012', '987654321098')."""
    folded = fold(password)
    if len(set(folded)) < MIN_DISTINCT_CHARACTERS:
        return True
    steps = {_step(a, b) for a, b in zip(folded, folded[1:], strict=False)}
    return steps == {1} or steps == {-1}


def _step(a: str, b: str) -> int:
    if a.isdigit() and b.isdigit():
        return (int(b) - int(a) + 5) % 10 - 5  # 9 then 0 goes on the run
    return ord(b) - ord(a)


def built_on(password: str, identifier: str | None, min_length: int) -> bool:
    """Whether the password contains `identifier` (a username, an e-mail address or its
    local part; ignoring case) and, once every occurrence is removed, fewer than min_length
    characters are left: the identifier adds nothing an attacker does not know."""
    if not identifier:
        return False
    ident = fold(identifier)
    if len(ident) < MIN_IDENTIFIER_LENGTH:
        return False
    folded = fold(password)
    return ident in folded and len(folded.replace(ident, "")) < min_length
