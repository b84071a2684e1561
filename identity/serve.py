"""`make serve`: the production HTTP server (granian), IDP_WORKERS processes on IDP_BIND.

`python -m identity.serve` (deploy/entrypoint.sh runs it after the migrations). granian's Rust
runtime reads request headers: clients that send them slowly hold a socket, never a worker
(with gunicorn's sync workers two such clients made a two-worker service unavailable).
Bodies are read by Python threads, then each worker answers one request at a time
(identity.one_at_a_time). Plain HTTP: TLS ends at the proxy in front, whose X-Forwarded-*
headers the app believes through IDP_TRUSTED_PROXIES alone.
"""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def settings() -> Any:
    """The service's settings, checked as the workers will check them (a bare app: no
    database, no connectors), so that a bad value stops the start with one line."""
    from flask import Flask

    from config import ConfigError, load

    app = Flask("identity", instance_path=str(ROOT / "instance"))
    load(app)
    cfg = app.config
    if cfg["ENV"] == "production" and not cfg["TRUSTED_PROXIES"]:
        raise ConfigError(
            "IDP_TRUSTED_PROXIES is 0: the server speaks plain HTTP to the TLS proxy in "
            "front, whose X-Forwarded-Proto must be believed; set it to the number of "
            "proxies (1 for one nginx or load balancer)"
        )
    return cfg


def metrics_directory() -> None:
    """prometheus_client's multiprocess mode: each worker writes its metrics to files that
    /metrics adds up. Unless PROMETHEUS_MULTIPROC_DIR names one, a directory of this run,
    removed at exit; set before any worker imports prometheus_client."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    made = tempfile.mkdtemp(prefix="idp-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    atexit.register(shutil.rmtree, made, True)


def application() -> Any:
    """What each worker serves (granian calls it once per worker): idp:app, its requests
    read whole and then answered one at a time (identity.one_at_a_time), but for their
    waits on the directory while their transaction holds no row lock (identity.database);
    glibc set to keep one heap for the worker's threads, given back when sign-ins stop
    (identity.malloc); the objects made at start left out of garbage collections."""
    from identity.malloc import trim_when_idle, tune
    from identity.one_at_a_time import OneAtATime

    tune()
    trim_when_idle()
    from identity.database import holds_locks
    from idp import app

    def may_release() -> bool:
        return not holds_locks()

    # The app's and its modules' objects (about 100,000) live as long as the worker: out of
    # the collector's way, once their garbage is gone. Each full collection walked them all,
    # a 30-60 ms stall of the request it fell in, every few thousand requests.
    gc.collect()
    gc.freeze()

    return OneAtATime(app, app.config["MAX_CONTENT_LENGTH"] or 64 * 1024, may_release)


def main() -> int:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels

    from config import ConfigError
    from identity.malloc import tune
    from identity.one_at_a_time import BODY_READERS
    from identity.settings.server import bind_address

    # Before granian's threads allocate: the workers it forks inherit its heaps.
    tune()
    try:
        cfg = settings()
    except ConfigError as exc:
        print(f"idp: configuration error: {exc}", file=sys.stderr)
        return 2
    for old in ("IDP_FORWARDED_ALLOW_IPS",):
        if old in os.environ:
            print(f"idp: {old} is no longer read: IDP_TRUSTED_PROXIES says which "
                  "X-Forwarded-* headers are believed", file=sys.stderr)  # fmt: skip
    host, port = bind_address(cfg["BIND"])
    metrics_directory()
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the workers import idp:app from here
    Granian(
        "identity.serve:application",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=cfg["WORKERS"],
        # Threads that read request bodies; the app runs one request at a time.
        blocking_threads=BODY_READERS,
        http=HTTPModes.http1,
        websockets=False,
        respawn_failed_workers=True,
        workers_kill_timeout=20,
        log_level=LogLevels.info,
        log_access=False,
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
