"""all.py's password sign-in ceiling: raw argon2id verifications per second, one process per
core, at the app's parameters (config.py), the service not running."""

from __future__ import annotations

from _common import measure_processes, timed_loop

PASSWORD = "correct horse battery staple"
HASH_PROCS = 2


def _hash_worker(
    start: float, warmup: float, seconds: float, out, encoded: str, params: dict
) -> None:
    from argon2 import PasswordHasher, Type

    ph = PasswordHasher(**params, type=Type.ID)

    def verify() -> None:
        ph.verify(encoded, PASSWORD)  # raises on a mismatch (never here)

    out.put(timed_loop(verify, start, warmup, seconds))


def measure_ceiling(seconds: float, warmup: float, params: dict) -> dict:
    """Raw argon2id verifications/s with one process per core, for the same window, at
    `params` (time_cost, memory_cost, parallelism: the app's, from config.py)."""
    from argon2 import PasswordHasher, Type

    encoded = PasswordHasher(**params, type=Type.ID).hash(PASSWORD)
    return measure_processes(_hash_worker, (encoded, params), HASH_PROCS, seconds, warmup)
