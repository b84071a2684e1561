"""Sign-in throughput under make serve (granian), against the ceiling of raw argon2id verification.

    .venv/bin/python bench/signin.py [--seconds N] [--concurrency C] [--warmup W]

1. A fresh SQLite database in a temporary directory: `flask --app idp db upgrade` and
   `flask --app idp user create` (production settings, default argon2id m=19456 KiB, t=2, p=1).
2. The ceiling: argon2id verifications per second with one process per core (2), service
   not running.
3. The service under make serve (granian; 2 workers, plain HTTP on 127.0.0.1 as behind a
   TLS-terminating proxy; X-Forwarded-Proto: https is trusted from 127.0.0.1), driven by C
   client threads doing GET /login + POST /login for N seconds after a warm-up.
4. One table; the overhead of the service over the raw hash.

A benchmark: it never asserts, it prints figures. Exit 0 when it ran; 1 when the service
did not start, setup failed, or every sign-in failed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from _common import (
    CORES,
    WORKERS,
    BenchError,
    Service,
    drive,
    free_port,
    interrupt,
    measure_processes,
    pct,
    run_flask,
    service_env,
    timed_loop,
    with_huge_pages,
)

USERNAME = "bench"
EMAIL = "bench@example.com"
PASSWORD = "correct horse battery staple"  # >= 12 characters (password policy)
# The app's defaults (config.py), which are OWASP's; the service runs with these too.
ARGON2 = dict(time_cost=2, memory_cost=19456, parallelism=1)
HASH_PROCS = 2


# ---------------------------------------------------------------------------- ceiling


def _hash_worker(
    start: float, warmup: float, seconds: float, out, encoded: str, params: dict
) -> None:
    from argon2 import PasswordHasher, Type

    ph = PasswordHasher(**params, type=Type.ID)

    def verify() -> None:
        ph.verify(encoded, PASSWORD)  # raises on a mismatch (never here)

    out.put(timed_loop(verify, start, warmup, seconds))


def measure_ceiling(seconds: float, warmup: float, params: dict | None = None) -> dict:
    """Raw argon2id verifications/s with one process per core, for the same window, at
    `params` (time_cost, memory_cost, parallelism; default ARGON2)."""
    from argon2 import PasswordHasher, Type

    params = params or ARGON2
    encoded = PasswordHasher(**params, type=Type.ID).hash(PASSWORD)
    return measure_processes(_hash_worker, (encoded, params), HASH_PROCS, seconds, warmup)


# ---------------------------------------------------------------------------- report


def main() -> int:
    with_huge_pages()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time (default 20)")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (default 3)")
    args = ap.parse_args()
    if args.seconds <= 0 or args.concurrency < 1 or args.warmup < 0:
        ap.error("--seconds must be > 0, --concurrency >= 1, --warmup >= 0")

    # SIGTERM takes the same path as Ctrl-C: the finally blocks stop the server.
    signal.signal(signal.SIGTERM, interrupt)

    service: Service | None = None
    with tempfile.TemporaryDirectory(prefix="idp-bench-") as tmp:
        try:
            port = free_port()
            env = service_env(port, f"sqlite:///{tmp}/bench.sqlite3")
            print(
                f"setup: database in {tmp}; argon2id m={ARGON2['memory_cost']} KiB "
                f"t={ARGON2['time_cost']} p={ARGON2['parallelism']}; {CORES} cores",
                flush=True,
            )
            run_flask(env, ["db", "upgrade"])
            run_flask(
                env,
                ["user", "create", "--username", USERNAME, "--email", EMAIL, "--password-stdin"],
                stdin=PASSWORD + "\n",
            )

            print(
                f"ceiling: argon2id verify, {HASH_PROCS} processes, {args.warmup:g} s warm-up "
                f"+ {args.seconds:g} s (service not running) ...",
                flush=True,
            )
            ceiling = measure_ceiling(args.seconds, args.warmup)

            service = Service(env, port, Path(tmp) / "server.log")
            service.wait_ready()
            print(
                f"service: make serve (granian), {WORKERS} workers on 127.0.0.1:{port}; "
                f"{args.concurrency} client threads, {args.warmup:g} s warm-up "
                f"+ {args.seconds:g} s ...",
                flush=True,
            )
            load = drive(
                port, args.concurrency, args.seconds, args.warmup, service, USERNAME, PASSWORD
            )
            if service.proc.poll() is not None:
                print(f"warning: the server exited during the run:\n{service.log_tail()}")
        except BenchError as exc:
            print(f"signin bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("signin bench: interrupted", file=sys.stderr)
            return 130
        finally:
            if service is not None:
                service.stop()

    ok, errors = len(load["full"]), load["errors"]
    c_rate, c_lat = ceiling["rate"], ceiling["lat"]
    rate = load["rate"]
    rows = [
        ("argon2id verify (raw)", c_rate, c_lat, c_rate),
        ("sign-in (GET+POST)", rate, load["full"], c_rate),
        ("  POST /login", rate, load["post"], c_rate),
        ("  GET /login", rate, load["get"], None),
    ]
    print()
    print(
        f"{'operation':<24}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ceiling ops/s':>15}{'ratio':>8}"
    )
    for name, r, lat, ceil in rows:
        ceil_s = f"{ceil:.1f}" if ceil else "-"
        ratio_s = f"{r / ceil:.3f}" if ceil else "-"
        print(
            f"{name:<24}{r:>9.1f}{pct(lat, 50):>9.1f}{pct(lat, 99):>9.1f}{ceil_s:>15}{ratio_s:>8}"
        )
    print()
    overhead = (c_rate / rate - 1) * 100 if rate else float("inf")
    print(
        f"overhead of the service over the raw hash: {overhead:+.1f}% "
        f"(ceiling/throughput - 1; target < 10%)"
    )
    print(
        f"sign-in latency (GET+POST): p50 {pct(load['full'], 50):.1f} ms, "
        f"p99 {pct(load['full'], 99):.1f} ms; POST only: p50 {pct(load['post'], 50):.1f} ms, "
        f"p99 {pct(load['post'], 99):.1f} ms; raw verify p50 {pct(c_lat, 50):.1f} ms"
    )
    print(
        f"sign-ins: {ok} ok, {sum(errors.values())} errors in {args.seconds:g} s "
        f"({args.concurrency} client threads, {WORKERS} server workers)"
    )
    for err, n in errors.most_common(5):
        print(f"  error x{n}: {err}")
    print(
        f"load generator CPU: {load['client_cpu_pct']:.1f}% of one core "
        f"(user+sys / wall, {CORES} cores available)"
    )
    per = 1000 * load["service_cpu_s"] / ok if ok else float("nan")
    raw_per = 1000 * ceiling["cpu_per_op"]
    print(
        f"service CPU: {load['service_cpu_pct']:.1f}% of one core; {per:.1f} ms per sign-in "
        f"vs {raw_per:.1f} ms per raw verify: CPU overhead {(per / raw_per - 1) * 100:+.1f}%"
    )
    noisy = max(ceiling["others_pct"], load["others_pct"]) > 10
    print(
        f"other processes on the machine: {ceiling['others_pct']:.0f}% of one core during "
        f"the ceiling, {load['others_pct']:.0f}% during the service run"
        + (
            " -- NOISY: throughput figures are unreliable, run again on a quiet machine"
            if noisy
            else ""
        )
    )
    print("TLS is excluded (plain HTTP on loopback, as behind a TLS-terminating proxy).")

    if ok == 0:
        print("signin bench: every sign-in failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
