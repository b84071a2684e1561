"""glibc's allocator set for a long-lived worker: large freed blocks given back to the system
at once, and one heap for all of the worker's threads.

glibc serves a block of 128 KiB or more with its own mapping, returned at free; but each such
free raises that threshold (up to 32 MiB) to the freed size, so later blocks up to that size
come from the heaps instead, and stay resident after they are freed. A worker's argon2id
verify allocates 19 MiB (config.ARGON2_MEMORY_COST); answered on any of the worker's
body-reader threads (identity.one_at_a_time), each with a heap (arena) of its own, a few
hundred sign-ins left 10 or more of those 19 MiB buffers resident in each worker (337 MB
after 1,000 sign-ins against 139 MB with the threshold fixed: bench/memory.py). Fixing the
threshold at its default keeps every large block a mapping of its own; one arena keeps the
threads' freed blocks for whichever thread runs next (the app runs one request at a time
anyway, and the threads hold the GIL to allocate).
"""

from __future__ import annotations

import ctypes

# mallopt's parameters (malloc.h) and their values here.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
THRESHOLD = 128 * 1024  # glibc's default, now fixed: no longer raised by a free
ARENAS = 1


def tune() -> bool:
    """Set both in this process, before its threads allocate; False where the C library is
    not glibc (no `mallopt`) or refused."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1 and mallopt(M_ARENA_MAX, ARENAS) == 1
