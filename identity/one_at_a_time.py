"""WSGI middleware of the production server: the request body read whole, then the app run
one request at a time in its process.

granian reads headers in its Rust runtime, but a request's body is read by the Python thread
that runs it, and it never times out (granian#728, wontfix). With one thread per worker,
two clients that send half a body stalled a two-worker service. So each worker has
BODY_READERS threads that read bodies side by side; the app itself still runs one request
at a time under a lock, as with gunicorn's sync workers, so per-process state (database
sessions, the client and key caches, in-memory counters, directory pools) sees no new
concurrency. The reverse proxy in front should still buffer request bodies (nginx does by
default): BODY_READERS slow bodies per worker fill this one.

A request waiting on another server (`waiting_elsewhere`: the directory's answer), on
another request (a sign-in waiting for a place in its name's lockout window) or on a
password hash (`hashing`: argon2id's ~20 ms of CPU, run without the GIL) lets go of
the lock meanwhile, so that a directory that hangs holds one request, not the worker: the
token endpoint of every app kept answering. It keeps the lock when `may_release` says no (the
request's transaction holds row locks: another request of this worker waiting on one of them
while holding the lock would never let it come back), and when MAX_WAITING requests already
wait. Coming back, it takes the lock before any new request (`ReturnsFirst`): with a plain
lock, new requests kept taking it first, and sign-ins of one name, each holding a place in
its lockout window until it came back, filled the window and were refused as a crowd.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

# Threads per worker (granian's blocking threads): how many requests may be read at once.
BODY_READERS = 32
# Password hashes a worker runs at once (each holds ARGON2_MEMORY_COST, 19 MiB by default):
# one per worker, as when they ran under the lock, so memory and the number of hashes the
# machine runs at once (one per worker, one worker per core) stay as they were.
HASHES = 1
# Requests of a worker that may wait elsewhere at once. Each keeps its database connection
# while it waits: with SQLAlchemy's pool of 5 + 10, 8 waiting leave room for the request
# running and its autocommit read (identity.database). Beyond, a wait keeps the lock.
MAX_WAITING = 8


# The lock the app runs under in this thread, and whether it may be let go (see the docstring).
_running = threading.local()


class ReturnsFirst:
    """A lock that a request coming back from a wait (`acquire(back=True)`) takes before any
    request that has not had it yet: a release hands it straight to the first of them.
    Otherwise a plain lock (`acquire`, `release`, `locked`, a context manager), taken by new
    requests as threading.Lock is, whoever runs first. (Handing it to new requests in order
    too halved the p99 at 64 connections, 104-130 -> 50-70 ms, and cost 5-10% of the
    requests per second there.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard = threading.Lock()  # around a release, and a return that may wait
        self._returning: deque[threading.Lock] = deque()

    def acquire(self, blocking: bool = True, *, back: bool = False) -> bool:
        if not back:
            return self._lock.acquire(blocking)
        with self._guard:
            if self._lock.acquire(blocking=False):
                return True
            if not blocking:
                return False
            handed = threading.Lock()
            handed.acquire()
            self._returning.append(handed)
        handed.acquire()  # released by the release() that hands the lock over, still taken
        return True

    def release(self) -> None:
        with self._guard:
            if not self._lock.locked():
                raise RuntimeError("release of an unlocked ReturnsFirst")
            if self._returning:
                self._returning.popleft().release()
            else:
                self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class OneAtATime:
    """Wraps a WSGI app: bodies up to `max_body` bytes read before the lock, the app and
    its whole answer inside it (but for its waits on other servers: `waiting_elsewhere`)."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        max_body: int,
        may_release: Callable[[], bool] = lambda: True,
    ):
        self.app = app
        self.max_body = max_body
        self.lock = ReturnsFirst()
        self.may_release = may_release
        self.waiting = threading.BoundedSemaphore(MAX_WAITING)
        self.hashes = threading.BoundedSemaphore(HASHES)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isascii() and length.isdigit():
            if 0 < int(length) <= self.max_body:
                # Longer bodies are not read: the app refuses them from the header (413).
                self._buffer(environ, environ["wsgi.input"].read(int(length)))
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            # No length: one byte more than allowed tells the app to refuse it (413).
            self._buffer(environ, environ["wsgi.input"].read(self.max_body + 1))
            environ.pop("HTTP_TRANSFER_ENCODING")
            environ.pop("wsgi.input_terminated", None)
        with self.lock:
            _running.wrapper = self
            try:
                result = self.app(environ, start_response)
                try:
                    return list(result)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
            finally:
                _running.wrapper = None

    @staticmethod
    def _buffer(environ: dict[str, Any], body: bytes) -> None:
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))


@contextmanager
def waiting_elsewhere() -> Iterator[bool]:
    """Around a wait on another server (or on another request): in a worker of `make serve`,
    the lock is let go meanwhile (when its `may_release` agrees) and taken again after;
    elsewhere (tests, commands, the development server) nothing happens. Yields whether
    the wait holds up no other request of this process: False when it keeps the lock."""
    wrapper = getattr(_running, "wrapper", None)
    if wrapper is None:
        yield True
        return
    if not wrapper.waiting.acquire(blocking=False):
        yield False
        return
    try:
        if not wrapper.may_release():
            yield False
            return
        _running.wrapper = None  # a nested wait inside this one lets go of nothing more
        wrapper.lock.release()
        try:
            yield True
        finally:
            wrapper.lock.acquire(back=True)
            _running.wrapper = wrapper
    finally:
        wrapper.waiting.release()


@contextmanager
def hashing() -> Iterator[None]:
    """Around a password hash: in a worker of `make serve`, its other requests (a token
    request, the login page) are answered meanwhile instead of queueing behind ~20 ms of
    argon2id, which needs no lock of this process and releases the GIL. At most HASHES at
    once in the worker: the turn is waited for holding the lock (so requests after this one
    wait too, and take no place in a lockout window meanwhile), and given back before the
    lock is taken again, so a hash that keeps the lock (waiting_elsewhere says no) and one
    that let it go never wait on each other. Elsewhere (tests, commands, the development
    server) nothing happens."""
    wrapper = getattr(_running, "wrapper", None)
    if wrapper is None:
        yield
        return
    wrapper.hashes.acquire()
    turn = True
    try:
        with waiting_elsewhere():
            try:
                yield
            finally:
                wrapper.hashes.release()
                turn = False
    finally:
        if turn:
            wrapper.hashes.release()
