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
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from typing import Any

# Threads per worker (granian's blocking threads): how many requests may be read at once.
BODY_READERS = 32


class OneAtATime:
    """Wraps a WSGI app: bodies up to `max_body` bytes read before the lock, the app and
    its whole answer inside it."""

    def __init__(self, app: Callable[..., Iterable[bytes]], max_body: int):
        self.app = app
        self.max_body = max_body
        self.lock = threading.Lock()

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
            result = self.app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    @staticmethod
    def _buffer(environ: dict[str, Any], body: bytes) -> None:
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
