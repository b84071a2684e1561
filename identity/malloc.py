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
argon2id ceiling. Instead, the block goes back when sign-ins stop (`trim_when_idle`): after a
hash, once no other ran for IDLE_SECONDS, a thread of the worker calls glibc's malloc_trim,
which returns the heap's free pages (the 19 MiB block, and whatever else is free) to the
system. A worker then holds the block only while it signs people in; the first verify after
a quiet spell pays the page faults once.

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
import threading
import time
from collections.abc import Callable, Mapping

M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)
ARENAS = 1
IDLE_SECONDS = 2.0
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


class IdleTrim:
    """malloc_trim once per quiet spell: `freed()` after each big block given back (cheap:
    a clock reading and an event); the thread wakes once that spell reaches `idle`
    seconds, trims, and sleeps until the next `freed()`."""

    def __init__(self, trim: Callable[[int], object], idle: float = IDLE_SECONDS) -> None:
        self._trim, self._idle = trim, idle
        self._last = 0.0
        self._due = threading.Event()
        self.trims = 0

    def freed(self) -> None:
        self._last = time.monotonic()
        self._due.set()

    def run(self) -> None:
        while True:
            self._due.wait()
            while (left := self._last + self._idle - time.monotonic()) > 0:
                time.sleep(left)
            # Cleared before the trim: a block freed from here on is either returned by this
            # trim or sets the event for the next one.
            self._due.clear()
            self._trim(0)
            self.trims += 1


_idle: IdleTrim | None = None


def trim_when_idle(idle: float = IDLE_SECONDS) -> bool:
    """Start this process's IdleTrim thread (once; a worker calls it after the fork, the
    thread does not survive one). False where the C library has no malloc_trim."""
    global _idle
    if _idle is not None:
        return True
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    _idle = IdleTrim(malloc_trim, idle)
    threading.Thread(target=_idle.run, name="idp-malloc-trim", daemon=True).start()
    return True


def freed() -> None:
    """A big block (argon2id's memory) was just freed: trimmed once things are quiet, in a
    process that called trim_when_idle; nothing elsewhere (tests, commands)."""
    if _idle is not None:
        _idle.freed()
