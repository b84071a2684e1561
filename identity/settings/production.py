"""What production refuses (or accepts only when told to), and the secret-key entropy estimate."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from config import ConfigError

# Values that must never reach production as a SECRET_KEY.
KNOWN_WEAK_SECRETS = {"", "dev", "secret", "changeme", "change-me", "development", "test"}
MIN_SECRET_KEY_LENGTH = 32
# Estimated entropy a production key needs (see estimated_entropy_bits): a 32-character
# secrets.token_hex() scored at least 86 in a million draws; 32 'a's score 0.
MIN_SECRET_KEY_BITS = 80
# argon2id (memory KiB, iterations) at parallelism 1 that OWASP's Password Storage Cheat
# Sheet gives as equally strong minimums; production needs at least one of them.
OWASP_ARGON2ID_MINIMUMS = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))


def refuse_insecure_production(cfg: Any) -> None:
    """Refuse (ConfigError) production without a strong SECRET_KEY or an https:// ISSUER,
    or with DEBUG on; no IDP_ALLOW_INSECURE_* accepts these."""
    key = cfg.get("SECRET_KEY")
    if not key:
        raise ConfigError(
            "IDP_SECRET_KEY must be set when IDP_ENV=production "
            "(generate one: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    if str(key).lower() in KNOWN_WEAK_SECRETS or len(str(key)) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"IDP_SECRET_KEY is a default or too short (at least "
            f"{MIN_SECRET_KEY_LENGTH} characters) for IDP_ENV=production"
        )
    if not str(cfg["ISSUER"]).startswith("https://"):
        raise ConfigError(
            f"IDP_ISSUER must be an https:// URL when IDP_ENV=production, not {cfg['ISSUER']!r}"
        )
    if cfg.get("DEBUG"):
        raise ConfigError("IDP_DEBUG must be off when IDP_ENV=production")


def insecure_production_settings(cfg: Any) -> list[str]:
    """Refuse (ConfigError) each insecure setting in production, unless its
    IDP_ALLOW_INSECURE_* is true; return what was allowed, as messages to log."""
    allowed = []

    def refuse(allow: str, problem: str) -> None:
        if cfg[allow] is True:
            allowed.append(f"IDP_{allow} is set: {problem}")
            return
        raise ConfigError(
            f"{problem}; IDP_ENV=production refuses this (or set IDP_{allow}=true to accept "
            f"it, logged as an error at every start)"
        )

    for key in ("SECRET_KEY", "KEY_ENCRYPTION_KEY"):
        value = cfg[key]
        if value is not None and (bits := estimated_entropy_bits(str(value))) < (
            MIN_SECRET_KEY_BITS
        ):
            refuse(
                "ALLOW_INSECURE_SECRET_KEY",
                f"IDP_{key} looks guessable (about {bits:.0f} bits of entropy estimated, at "
                f"least {MIN_SECRET_KEY_BITS} needed): generate one with python -c 'import "
                f"secrets; print(secrets.token_hex(32))'",
            )
    if cfg["LDAP_URL"] and cfg["LDAP_TLS_INSECURE_SKIP_VERIFY"]:
        refuse(
            "ALLOW_INSECURE_LDAP_TLS",
            "IDP_LDAP_TLS_INSECURE_SKIP_VERIFY is on: directory certificates are not verified, "
            "and anyone on the network path can read every password; turn it off and set "
            "IDP_LDAP_CA_FILE to the directory's CA",
        )
    plain = [u for u in cfg["LDAP_URL"] if u.startswith("ldap://")]
    if plain and not cfg["LDAP_START_TLS"]:
        refuse(
            "ALLOW_INSECURE_LDAP_PLAINTEXT",
            f"IDP_LDAP_URL {plain[0]} sends passwords in clear: set IDP_LDAP_START_TLS=true "
            f"or use an ldaps:// URL",
        )
    if (
        cfg["MAIL_SERVER"]
        and cfg["MAIL_USERNAME"]
        and not (cfg["MAIL_USE_STARTTLS"] or cfg["MAIL_USE_SSL"])
    ):
        refuse(
            "ALLOW_INSECURE_SMTP",
            "IDP_MAIL_USERNAME logs in to the SMTP server without TLS, its password in clear: "
            "set IDP_MAIL_USE_STARTTLS=true or IDP_MAIL_USE_SSL=true",
        )
    m, t = cfg["ARGON2_MEMORY_COST"], cfg["ARGON2_TIME_COST"]
    if cfg["ARGON2_PARALLELISM"] < 1 or not any(
        m >= min_m and t >= min_t for min_m, min_t in OWASP_ARGON2ID_MINIMUMS
    ):
        refuse(
            "ALLOW_INSECURE_ARGON2",
            f"IDP_ARGON2_MEMORY_COST={m} (KiB) with IDP_ARGON2_TIME_COST={t} is below "
            f"OWASP's minimum for argon2id: use 19456 KiB with 2 iterations (the default), "
            f"or 47104 with 1, 12288 with 3, 9216 with 4, 7168 with 5, or more",
        )
    return allowed


def estimated_entropy_bits(secret: str) -> float:
    """An honest, simple estimate of a secret's entropy in bits: its characters' Shannon
    entropy over the shortest unit it repeats ('abcabcabc' counts as 'abc'). It sees
    repetition and small alphabets, not meaning: a sentence scores like random letters."""
    period = (secret + secret).find(secret, 1)  # len(secret) when nothing repeats
    unit = secret[:period] if secret else ""
    return -sum(n * math.log2(n / len(unit)) for n in Counter(unit).values()) + 0.0
