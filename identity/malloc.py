"""glibc's allocator set for a long-lived worker: one heap (arena) for all of its threads.

A worker's argon2id verify allocates 19 MiB (config.ARGON2_MEMORY_COST). After the first such
block is freed, glibc serves the next ones from a heap rather than a mapping of their own, and
a heap keeps its freed top up to twice that size. Each of a worker's body-reader threads
(identity.one_at_a_time) had a heap of its own, so each thread that ever ran a sign-in kept
its 19 MiB resident: 337 MB per worker after 1,000 sign-ins (bench/memory.py). With one heap,
the worker keeps one such block, which every verify reuses (the app runs one request at a
time anyway, and the threads hold the GIL to allocate).

The threshold is left to glibc on purpose: fixed at 128 KiB, each 19 MiB block would be a
fresh mapping, given back at free, but the 4,865 page faults of mapping it again cost each
verify 11 ms of CPU (22 ms -> 34 ms on this VM), against the sign-in target of 0.9 of the
argon2id ceiling.

Huge pages: with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (HUGE_PAGES, glibc 2.35 and later;
deploy/entrypoint.sh sets it before the server starts, since glibc reads it only at a
process's start) malloc asks the kernel for transparent huge pages for its heap and large
blocks (`madvise`, which is what Debian's default THP mode waits for). argon2id's 19 MiB
then sits in 2 MiB pages instead of 4,864 small ones: a verify took 16.7-17.5 ms instead of
18.4-19.0 ms here, and sign-ins through the server went from 58.9 to 66.5/s (bench/all.py),
for under 1 MB more per worker (bench/memory.py). Without THP, or on another C library, the
setting does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)
ARENAS = 1
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def tune() -> bool:
    """Set it in this process, before its threads allocate; False where the C library is
    not glibc (no `mallopt`) or refused."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_ARENA_MAX, ARENAS) == 1


def with_huge_pages(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` for a process to start with HUGE_PAGES among its GLIBC_TUNABLES."""
    tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
    if HUGE_PAGES not in tunables:
        tunables.append(HUGE_PAGES)
    return {**environ, "GLIBC_TUNABLES": ":".join(tunables)}
