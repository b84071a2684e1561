"""glibc's allocator told to give large freed blocks back to the system at once.

glibc serves a block of 128 KiB or more with its own mapping, returned at free; but each such
free raises that threshold (up to 32 MiB) to the freed size, so later blocks up to that size
come from the heaps instead, and stay resident after they are freed. A worker's argon2id
verify allocates 19 MiB (config.ARGON2_MEMORY_COST); answered on any of the worker's
body-reader threads (identity.one_at_a_time), each with a heap (arena) of its own, a few
hundred sign-ins left 10 or more of those 19 MiB buffers resident in each worker (337 MB
after 1,000 sign-ins against 139 MB with the threshold fixed: bench/memory.py). Fixing the
threshold at its default keeps every large block a mapping of its own.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
THRESHOLD = 128 * 1024  # glibc's default, now fixed: no longer raised by a free


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold in this process; False where the C library is not glibc
    (no `mallopt`) or refused."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
