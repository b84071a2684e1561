"""Every benchmark in one run and one table: password and LDAP sign-in and the OpenID
Connect endpoints on each database backend, against raw ceilings measured in the same run,
the peer (oidc-provider) and issues 8 and 16's targets.

    .venv/bin/python bench/all.py [--seconds 10] [--warmup 2] [--concurrency 8] [--wide 64]
        [--slow 200] [--backends sqlite,postgres] [--ops signin,ldap,cc,refresh,code,userinfo,
        discovery,jwks,introspect] [--peer/--no-peer] [--check-generator] [--json PATH]

1. Ceilings, service not running, 2 processes each (one per core), once per run: raw
   argon2id verify at the app's parameters (config.py), raw ldap3 search+bind on reused
   connections against the run's slapd (tests/ldap_server.py), raw RS256 signing of an
   RFC 9068 access token (joserfc).
1b. The peer (peer_bench.py; --no-peer leaves it out): oidc-provider from bench/peer
   (`npm ci` when needed), 2 node:cluster workers, through the same runs as below for client
   credentials, discovery, JWKS, introspection and userinfo; then, its storage in Redis
   (--redis) shared by its workers, refresh and the code flow; stopped before the backends.
2. Per backend: `sqlite` (a fresh file in a temporary directory, no Redis) and `postgres`
   (a fresh database on the local PostgreSQL, Redis for the counters under a prefix of this
   run's own). make serve (granian), 2 workers, plain HTTP on 127.0.0.1, X-Forwarded-Proto: https
   trusted. Each operation: a closed-loop peak run (C client threads; the operations compared
   with the peer once more with --wide threads, issue 16's 8 and 64 connections), then an
   open-loop run paced at half the peak rate (latency from each request's due time). Password
   sign-in, client credentials, refresh, code flow, userinfo, discovery, JWKS and
   introspection on one server; LDAP sign-in on a second one with IDP_LDAP_* set. VmRSS of
   every worker after the runs; then, once, --slow clients trickling headers while one
   client sends GET /healthz (its p99).
3. One table, the table against the peer (ratios), then worker memory, PostgreSQL against
   SQLite, the slow clients, the load generator's CPU, errors and NOISY warnings.
4. The servers (the peer too), slapd, the temporary directory, the PostgreSQL database and
   the Redis keys are always removed (also on error, Ctrl-C and SIGTERM).

A benchmark: it never asserts, it prints figures. Exit 0 when it ran; 1 when setup failed
or every call of an operation failed; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import secrets
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import ldap_signin
import oidc
import peer_bench
import signin
from _common import (
    CORES,
    WORKERS,
    BenchError,
    Op,
    Probes,
    Service,
    drive_ops,
    drive_paced,
    drive_split,
    drop_redis_keys,
    free_port,
    interrupt,
    paced_threads,
    pct,
    proc_cpu_seconds,
    processes_cpu_seconds,
    sign_in_once,
    slow_run,
    timewait_sockets,
    top_errors,
    wide_figures,
    with_huge_pages,
)

OPS = ("signin", "ldap", "cc", "refresh", "code", "userinfo", "discovery", "jwks", "introspect")
NAMES = {
    "signin": "password sign-in",
    "ldap": "LDAP sign-in",
    "cc": "client credentials",
    "refresh": "refresh (rotating)",
    "code": "code flow",
    "userinfo": "userinfo",
    "discovery": "discovery",
    "jwks": "JWKS",
    "introspect": "introspection",
}
BACKENDS = ("sqlite", "postgres")
# Issue 8's targets: a share of the ceiling, a rate, and p99 at half the peak rate.
RATIO_TARGETS = {"signin": 0.90, "ldap": 0.70}
RATE_TARGETS = dict(oidc.TARGETS)  # cc 1000, refresh 400, code 250, userinfo 1500
HALF_P99_MS = 50.0
NO_HALF_P99_TARGET = {"signin"}  # argon2id alone takes ~40 ms per sign-in
RSS_TARGET_MB = 100.0  # issue 16: < 100 MB resident per worker after the run
PG_RATIO_TARGET = 0.8  # issue 16: PostgreSQL + Redis within 0.8x of SQLite on each row
SLOW_P99_MS = 100.0  # issue 16: slow clients do not delay others (their p99)
NOISY_PCT = 10.0
CEILING_OF = {"signin": "argon2", "ldap": "ldap", "cc": "rs256"}
CEILING_PROCS = 2
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"

T0 = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - T0:5.0f} s] {text}", flush=True)


def _num(x: float | None) -> float | None:
    """JSON has no NaN."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


# ---------------------------------------------------------------------------- backends


class Backend:
    """A fresh database for one backend, and for postgres a Redis key prefix of its own;
    cleanup() removes both (idempotent, never raises)."""

    def __init__(self, name: str, workdir: Path, postgres: str, redis_url: str):
        self.name, self.workdir = name, workdir
        self.postgres, self.redis_url = postgres, redis_url
        self.database: str | None = None  # PostgreSQL database to drop
        self.prefix: str | None = None  # Redis key prefix to delete
        self.notes: list[str] = []

    def create(self) -> tuple[str, dict[str, str], Probes]:
        """(IDP_DATABASE_URL, other IDP_* settings, CPU probes of the servers behind it)."""
        if self.name == "sqlite":
            return f"sqlite:///{self.workdir}/bench.sqlite3", {}, {}
        import psycopg
        import redis
        from psycopg import sql

        self.prefix = f"idp-bench-{secrets.token_hex(6)}"
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=3)
            client.ping()
            client.close()
        except redis.RedisError as exc:
            raise BenchError(f"Redis at {self.redis_url}: {exc}") from exc
        name = f"idp_bench_{secrets.token_hex(6)}"
        self.database = name  # before CREATE: cleanup drops IF EXISTS
        try:
            with psycopg.connect(self.postgres, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise BenchError(f"PostgreSQL at {self.postgres}: {exc}") from exc
        parts = urllib.parse.urlsplit(self.postgres)
        url = urllib.parse.urlunsplit(
            ("postgresql+psycopg", parts.netloc, f"/{name}", parts.query, "")
        )
        settings = {"IDP_REDIS_URL": self.redis_url, "IDP_REDIS_KEY_PREFIX": self.prefix}
        probes = {
            # The backends serving this database (their command line names it), and Redis
            # (the whole server: other users of it count too).
            "postgres": processes_cpu_seconds(
                lambda comm, cmdline: comm == "postgres" and f" {name} " in cmdline
            ),
            "redis": processes_cpu_seconds(lambda comm, _: comm == "redis-server"),
        }
        return url, settings, probes

    def cleanup(self) -> None:
        if self.database is not None:
            name, self.database = self.database, None
            try:
                import psycopg
                from psycopg import sql

                with psycopg.connect(self.postgres, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
                self.notes.append(f"database {name} dropped")
            except Exception as exc:  # noqa: BLE001 - report, go on cleaning
                self.notes.append(f"DROP DATABASE {name} failed: {exc}")
        if self.prefix is not None:
            prefix, self.prefix = self.prefix, None
            self.notes.append(drop_redis_keys(self.redis_url, prefix))
        for note in self.notes:
            say(f"{self.name}: cleanup: {note}")
        self.notes = []


# ---------------------------------------------------------------------------- operations


def sign_in_op(port: int, username: str, password: str) -> Callable[[int], Op]:
    def make_op(_: int) -> Op:
        def op() -> tuple[str | None, dict[str, float]]:
            err, t_get, t_post = sign_in_once(port, username, password)
            return err, {"get": t_get, "post": t_post}

        return op

    return make_op


def oidc_op(key: str, port: int, web: oidc.App, service_app: oidc.App) -> Callable[[int], Op]:
    """A new oidc.Phase per run: its per-thread setup (sign-in, first tokens) as in oidc.py."""
    return getattr(oidc.Phase(port, web, service_app), key)


def run_op(
    args,
    backend: str,
    key: str,
    service: Service,
    factory: Callable[[], Callable[[int], Op]],
    probes=None,
) -> dict:
    """The closed-loop peak run (and for the operations compared with the peer, another
    with --wide threads), then the open-loop run at half the higher of their rates."""
    label = f"{backend}: {NAMES[key]}"

    def closed_loop(threads: int) -> dict:
        say(
            f"{label}: peak, {threads} client threads, {args.warmup:g} s warm-up + "
            f"{args.seconds:g} s ..."
        )
        run = drive_ops(threads, args.seconds, args.warmup, service, factory(), probes)
        if service.proc.poll() is not None:
            raise BenchError(f"the server exited during {label}:\n{service.log_tail()}")
        say(
            f"{label}: {run['rate']:.1f}/s with {threads} threads, p50 "
            f"{pct(run['full'], 50):.1f} ms, p99 {pct(run['full'], 99):.1f} ms, "
            f"{sum(run['errors'].values())} errors"
        )
        return run

    peak = closed_loop(args.concurrency)
    wide = closed_loop(args.wide) if args.wide and key in peer_bench.WIDE_OPS else None
    paced = None
    half = max(peak["rate"], wide["rate"] if wide else 0) / 2
    if peak["full"] and half > 0:
        threads = paced_threads(half, args.concurrency)
        say(
            f"{label}: open loop at half rate, {half:.1f}/s due, {threads} client threads, "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s ..."
        )
        paced = drive_paced(half, threads, args.seconds, args.warmup, service, factory(), probes)
        if service.proc.poll() is not None:
            raise BenchError(f"the server exited during {label}:\n{service.log_tail()}")
        say(
            f"{label}: half rate: {paced['rate']:.1f}/s done of {half:.1f}/s due, p99 "
            f"{pct(paced['full'], 99):.1f} ms from due time, {sum(paced['errors'].values())} "
            "errors"
        )
    return {"peak": peak, "wide": wide, "paced": paced}


MIXED_CC_RATE = 20.0  # client-credentials requests due each second during the sign-ins


def run_mixed(args, backend: str, service: Service, signins, tokens, probes) -> dict:
    """Sign-ins from --concurrency clients (closed loop) while client-credentials requests
    are due MIXED_CC_RATE times a second (open loop, latency from each one's due time): how
    long an app waits for a token while the workers check passwords."""
    label = f"{backend}: token requests during sign-ins"
    say(
        f"{label}: {args.concurrency} clients signing in, client credentials due "
        f"{MIXED_CC_RATE:g}/s, {args.warmup:g} s warm-up + {args.seconds:g} s ..."
    )
    paced: dict = {}

    def pace() -> None:
        threads = paced_threads(MIXED_CC_RATE, 4)
        try:
            paced.update(
                drive_paced(MIXED_CC_RATE, threads, args.seconds, args.warmup, service, tokens())
            )
        except BaseException as exc:  # noqa: BLE001 - raised again below, in this thread
            paced["failed"] = exc

    pacer = threading.Thread(target=pace, name="bench-mixed-tokens")
    pacer.start()
    try:
        run = drive_ops(args.concurrency, args.seconds, args.warmup, service, signins(), probes)
    finally:
        pacer.join()
    if "failed" in paced:
        raise paced["failed"]
    if service.proc.poll() is not None:
        raise BenchError(f"the server exited during {label}:\n{service.log_tail()}")
    row = {
        "backend": backend,
        "signins_per_s": run["rate"],
        "signin_errors": sum(run["errors"].values()),
        "cc_due_per_s": MIXED_CC_RATE,
        "cc_done_per_s": paced["rate"],
        "cc_p50_ms": pct(paced["full"], 50),
        "cc_p99_ms": pct(paced["full"], 99),
        "cc_errors": sum(paced["errors"].values()),
    }
    say(
        f"{label}: {row['signins_per_s']:.1f} sign-ins/s; client credentials p50 "
        f"{row['cc_p50_ms']:.1f} ms, p99 {row['cc_p99_ms']:.1f} ms from due time; "
        f"{row['signin_errors'] + row['cc_errors']} errors"
    )
    return row


# ---------------------------------------------------------------------------- report


def evaluate(backend: str, key: str, run: dict, ceilings: dict, wide: int) -> dict:
    """One row of the table, with its targets checked."""
    peak, paced = run["peak"], run["paced"]
    ceiling = ceilings.get(CEILING_OF.get(key, ""), {}).get("rate")
    rate = peak["rate"]
    ratio = rate / ceiling if ceiling else None
    half_p99 = pct(paced["full"], 99) if paced else float("nan")
    checks: list[tuple[str, bool]] = []
    if key in RATIO_TARGETS:
        t = RATIO_TARGETS[key]
        checks.append((f"ratio >= {t:.2f}", ratio is not None and ratio >= t))
    if key in RATE_TARGETS:
        checks.append((f">= {RATE_TARGETS[key]}/s", rate >= RATE_TARGETS[key]))
    if key not in NO_HALF_P99_TARGET:
        checks.append((f"half p99 < {HALF_P99_MS:g}", half_p99 < HALF_P99_MS))
    return {
        "backend": backend,
        "operation": key,
        "name": NAMES[key],
        "ops_per_s": rate,
        "p50_ms": pct(peak["full"], 50),
        "p99_ms": pct(peak["full"], 99),
        "half_p99_ms": half_p99,
        "ceiling": ceiling,
        "ratio": ratio,
        "target": "; ".join(text for text, _ in checks),
        "met": "; ".join("yes" if ok else "NO" for _, ok in checks),
        "checks": {text: ok for text, ok in checks},
        "ok": len(peak["full"]),
        "errors": sum(peak["errors"].values()),
        "half": None
        if paced is None
        else {
            "due_per_s": paced["rate_target"],
            "done_per_s": paced["rate"],
            "threads": paced["threads"],
            "ok": len(paced["full"]),
            "errors": sum(paced["errors"].values()),
            "start_lag_p99_ms": pct(paced["lag"], 99),
            "p50_ms": pct(paced["full"], 50),
            "gen_cpu_pct": paced["client_cpu_pct"],
            "svc_cpu_pct": paced["service_cpu_pct"],
            "other_cpu_pct": paced["others_pct"],
            "steal_cpu_pct": paced.get("steal_pct"),
        },
        "gen_cpu_pct": peak["client_cpu_pct"],
        "svc_cpu_pct": peak["service_cpu_pct"],
        "other_cpu_pct": peak["others_pct"],
        "steal_cpu_pct": peak.get("steal_pct"),
        "softirq_cpu_pct": peak.get("softirq_pct"),
        "svc_ms_per_op": 1000 * peak["service_cpu_s"] / len(peak["full"]) if peak["full"] else None,
        "slapd_cpu_pct": peak["probe_pct"].get("slapd"),
        "db_cpu_pct": _sum_or_none(peak["probe_pct"], ("postgres", "redis")),
        "probe_cpu_pct": peak["probe_pct"],
        "wide": wide_figures(run, wide),
        "top_errors": top_errors(run),
    }


def _sum_or_none(d: dict[str, float], keys: tuple[str, ...]) -> float | None:
    found = [d[k] for k in keys if k in d]
    return sum(found) if found else None


def _f(value: float | None, width: int, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}.{digits}f}"


CEILING_NAMES = {
    "argon2": f"argon2id verify, {CEILING_PROCS} procs",
    "ldap": f"ldap3 search+bind, {CEILING_PROCS} procs",
    "rs256": f"RS256 sign, {CEILING_PROCS} procs",
}


def print_cpu(rows: list[dict]) -> None:
    """Per run: CPU of the load generator, the service, the servers behind it and the rest;
    the half-rate runs' pacing."""
    print()
    print(
        f"CPU, % of one core ({CORES} cores = {100 * CORES}%): gen = load generator "
        "(this process), svc = the server (main process + workers), db = PostgreSQL backends of "
        "the run's database + Redis, ldap = slapd, other = other processes, net = the kernel's "
        "loopback TCP work (softirq, charged to no process), steal = time the hypervisor "
        "gave to other machines"
    )
    print(f"{'':<31}{'peak run':-^52}   {'half-rate run (open loop)':-^56}")
    print(
        f"{'backend':<9}{'operation':<22}{'gen %':>6}{'svc %':>6}{'db %':>6}{'ldap %':>7}"
        f"{'other%':>7}{'net %':>6}{'steal%':>7}{'svc ms/op':>10}   {'due/s':>7}{'done/s':>7}"
        f"{'threads':>8}{'lag p99':>8}{'p50 ms':>7}{'gen %':>6}{'other%':>7}{'steal%':>7}"
    )
    for r in rows:
        h = r["half"] or {}
        print(
            f"{r['backend']:<9}{r['name']:<22}{_f(r['gen_cpu_pct'], 6, 0)}"
            f"{_f(r['svc_cpu_pct'], 6, 0)}{_f(r['db_cpu_pct'], 6, 0)}"
            f"{_f(r['slapd_cpu_pct'], 7, 0)}{_f(r['other_cpu_pct'], 7, 0)}"
            f"{_f(r['softirq_cpu_pct'], 6, 0)}{_f(r['steal_cpu_pct'], 7, 0)}"
            f"{_f(r['svc_ms_per_op'], 10, 2)}   {_f(h.get('due_per_s'), 7)}"
            f"{_f(h.get('done_per_s'), 7)}{_f(h.get('threads'), 8, 0)}"
            f"{_f(h.get('start_lag_p99_ms'), 8)}{_f(h.get('p50_ms'), 7)}"
            f"{_f(h.get('gen_cpu_pct'), 6, 0)}{_f(h.get('other_cpu_pct'), 7, 0)}"
            f"{_f(h.get('steal_cpu_pct'), 7, 0)}"
        )
    print(
        "svc ms/op: the server's CPU per operation (less sensitive to other load than rates). "
        "lag p99: how late requests started after their due time, ms; it grows when the "
        "service falls behind or the generator has no free thread."
    )


def print_report(args, report: dict) -> None:
    rows, ceilings = report["rows"], report["ceilings"]
    if not rows and not ceilings:
        return
    print()
    header = (
        f"{'backend':<9}{'operation':<28}{'ops/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'p99 ms':>8}{'ceiling':>9}{'ratio':>7}  {'target':<30}met"
    )
    print(header)
    print(f"{'':<61}{'@half':>8}{'same run':>9}")
    for key, c in ceilings.items():
        print(
            f"{'(raw)':<9}{CEILING_NAMES[key]:<28}{c['rate']:>8.1f}{_f(pct(c['lat'], 50), 8)}"
            f"{_f(pct(c['lat'], 99), 8)}{'-':>8}{'-':>9}{'-':>7}  {'-':<30}-"
        )
    for r in rows:
        print(
            f"{r['backend']:<9}{r['name']:<28}{r['ops_per_s']:>8.1f}{_f(r['p50_ms'], 8)}"
            f"{_f(r['p99_ms'], 8)}{_f(r['half_p99_ms'], 8)}{_f(r['ceiling'], 9)}"
            f"{_f(r['ratio'], 7, 3)}  {r['target']:<30}{r['met']}"
        )
    print()
    print(
        "ops/s, p50, p99: closed loop, "
        f"{args.concurrency} client threads, {args.seconds:g} s; p99 @half: open loop paced at "
        "half that rate, latency from each request's due time (queueing included). ceiling: "
        f"raw rate in {CEILING_PROCS} processes, service stopped; ratio = ops/s / ceiling. "
        "met: one yes/NO per target, in order."
    )

    report["comparison"] = peer_bench.compare(rows, report["peer"])
    peer_bench.print_comparison(
        report["comparison"], report["peer"], report.get("peer_version", "?")
    )
    if report.get("peer_error"):
        print(f"peer: not measured or incomplete: {report['peer_error']}")
    for store, rss in (report.get("peer_rss") or {}).items():
        mbs = ", ".join(f"{v / 1e6:.1f}" for v in rss.values())
        print(f"RSS peer workers, storage in {store} (VmRSS after its runs, MB): {mbs}")

    # Load generator and CPU, per run.
    if rows:
        print_cpu(rows)
    for key, c in ceilings.items():
        slapd = c["probe_pct"].get("slapd")
        print(
            f"ceiling {CEILING_NAMES[key]}: processes {c['cpu_pct']:.0f}%"
            + (f", slapd {slapd:.0f}%" if slapd is not None else "")
            + f", other {c['others_pct']:.0f}%, steal {c.get('steal_pct', 0):.0f}%"
        )

    gen = report.get("generator_check") or {}
    for backend, g in gen.items():

        def fmt(f: dict) -> str:
            return ", ".join(
                f"{r:.1f}/s (gen {g_:.0f}%, svc {ms:.2f} ms/op)" if ms else f"{r:.1f}/s"
                for r, g_, ms in zip(f["rates"], f["gen_cpu_pct"], f["svc_ms_per_op"], strict=True)
            )

        print(
            f"generator check ({backend}, client credentials, {args.concurrency} threads): "
            f"split in {g['procs']} processes {fmt(g['split'])}; one process {fmt(g['single'])}; "
            f"median {100 * g['gain']:+.1f}% (single runs spread "
            f"{100 * g['single_spread']:.0f}%) -- {g['verdict']}"
        )

    # Memory.
    print()
    for backend, services in report["rss"].items():
        parts = []
        for svc, rss in services.items():
            if rss:
                mbs = ", ".join(f"{v / 1e6:.1f}" for v in rss.values())
                parts.append(f"{svc} workers {mbs}")
        every = [v for rss in services.values() for v in rss.values()]
        if every:
            top = max(every) / 1e6
            met = "yes" if top < RSS_TARGET_MB else "NO"
            print(
                f"RSS {backend} (VmRSS after its runs, MB = 10^6 bytes): {'; '.join(parts)}; "
                f"max {top:.1f} MB, target < {RSS_TARGET_MB:g}: {met}"
            )

    # PostgreSQL + Redis against SQLite.
    by = {(r["backend"], r["operation"]): r for r in rows}
    pairs = [(k, by[("sqlite", k)], by[("postgres", k)]) for k in OPS if ("sqlite", k) in by
             and ("postgres", k) in by]  # fmt: skip
    if pairs:
        print()
        print(f"PostgreSQL + Redis against SQLite (same run; target >= {PG_RATIO_TARGET:g} each)")
        print(f"{'operation':<28}{'sqlite':>9}{'postgres':>9}{'ratio':>7}  met")
        for k, lite, pg in pairs:
            ratio = pg["ops_per_s"] / lite["ops_per_s"] if lite["ops_per_s"] else None
            met = "yes" if ratio is not None and ratio >= PG_RATIO_TARGET else "NO"
            print(
                f"{NAMES[k]:<28}{lite['ops_per_s']:>9.1f}{pg['ops_per_s']:>9.1f}"
                f"{_f(ratio, 7, 2)}  {met}"
            )
    if report["mixed"]:
        print()
        print(
            f"token requests during sign-ins: {args.concurrency} clients signing in while "
            f"client credentials are due {MIXED_CC_RATE:g}/s (open loop); alone: the rows above"
        )
        print(
            f"{'backend':<9}{'sign-ins/s':>11}{'alone':>8}{'cc p50 ms':>11}{'cc p99 ms':>11}"
            f"{'alone p99@half':>16}{'errors':>8}"
        )
        for m in report["mixed"]:
            alone = {
                r["operation"]: r for r in rows if r["backend"] == m["backend"]
            }  # the same server's own rows
            print(
                f"{m['backend']:<9}{m['signins_per_s']:>11.1f}"
                f"{_f(alone.get('signin', {}).get('ops_per_s'), 8)}{_f(m['cc_p50_ms'], 11)}"
                f"{_f(m['cc_p99_ms'], 11)}{_f(alone.get('cc', {}).get('half_p99_ms'), 16)}"
                f"{m['signin_errors'] + m['cc_errors']:>8}"
            )
    slow = report.get("slow")
    if slow:
        met = "yes" if slow["p99_ms"] < SLOW_P99_MS else "NO"
        print(
            f"slow clients ({slow['backend']}): {args.slow} connections sending one header byte "
            f"a second; GET /healthz meanwhile answered {slow['ok']}/{slow['sent']}, p99 "
            f"{slow['p99_ms']:.1f} ms (a timeout counts 5 s); target p99 < {SLOW_P99_MS:g}: {met}"
        )

    # Errors, service logs, noise.
    for r in rows:
        if r["top_errors"]:
            print(f"errors {r['backend']} {r['name']}:")
            for err, n in r["top_errors"]:
                print(f"  x{n}: {err}")
    for (backend, svc), logged in report["logs"].items():
        tracebacks, lines = logged["tracebacks"], logged["lines"]
        if tracebacks or lines:
            print(
                f"server log ({backend}, {svc}): {sum(tracebacks.values())} tracebacks, "
                f"{sum(lines.values())} other lines"
            )
            for text, n in sorted(tracebacks.items(), key=lambda x: -x[1])[:5]:
                print(f"  traceback x{n}: {text[:160]}")
            for text, n in sorted(lines.items(), key=lambda x: -x[1])[:5]:
                print(f"  x{n}: {text[:160]}")
    others = [
        ("ceiling " + CEILING_NAMES[k], c["others_pct"] + (c.get("steal_pct") or 0))
        for k, c in ceilings.items()
    ]
    for p in report["peer"].values():
        others.append((f"peer {p['name']}", p["other_cpu_pct"] + (p.get("steal_cpu_pct") or 0)))
        if p["wide"]:
            others.append((f"peer {p['name']} @{args.wide}", p["wide"]["other_cpu_pct"]))
        if p["half_other_cpu_pct"] is not None:
            others.append((f"peer {p['name']} @half", p["half_other_cpu_pct"]))
    for r in rows:
        others.append(
            (f"{r['backend']} {r['name']}", r["other_cpu_pct"] + (r.get("steal_cpu_pct") or 0))
        )
        if r["wide"]:
            others.append((f"{r['backend']} {r['name']} @{args.wide}", r["wide"]["other_cpu_pct"]))
        if r["half"]:
            h = r["half"]
            others.append(
                (
                    f"{r['backend']} {r['name']} @half",
                    h["other_cpu_pct"] + (h.get("steal_cpu_pct") or 0),
                )
            )
    noisy = [(what, p) for what, p in others if p > NOISY_PCT]
    if noisy:
        worst = max(noisy, key=lambda x: x[1])
        print(
            f"NOISY: other processes and steal used more than {NOISY_PCT:g}% of one core in "
            f"{len(noisy)} of {len(others)} windows (up to {worst[1]:.0f}%, {worst[0]}): "
            "rates and p99 are unreliable (compare svc ms/op, or run again on a quiet machine)"
        )
    print(
        f"{WORKERS} workers of make serve (granian); one new connection per request; TLS excluded "
        "(plain HTTP on loopback, as behind a TLS-terminating proxy)."
    )


def write_json(path: str, args, report: dict) -> None:
    def clean(x):
        if isinstance(x, float):
            return _num(x)
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    data = {
        "args": vars(args),
        "cores": CORES,
        "workers": WORKERS,
        "ceilings": {
            k: {
                "name": CEILING_NAMES[k],
                "ops_per_s": c["rate"],
                "p50_ms": pct(c["lat"], 50),
                "p99_ms": pct(c["lat"], 99),
                "cpu_pct": c["cpu_pct"],
                "other_cpu_pct": c["others_pct"],
            }
            for k, c in report["ceilings"].items()
        },
        "rows": report["rows"],
        "rss_bytes": report["rss"],
        "rss_target_mb": RSS_TARGET_MB,
        "slow_clients": report.get("slow"),
        "token_requests_during_sign_ins": report["mixed"],
        "generator_check": report.get("generator_check"),
        "peer": {
            "version": report.get("peer_version"),
            "rows": report["peer"],
            "rss_bytes": report.get("peer_rss"),
            "error": report.get("peer_error"),
        },
        "comparison": report.get("comparison"),
        "server_logs": {f"{b}/{s}": v for (b, s), v in report["logs"].items()},
    }
    Path(path).write_text(json.dumps(clean(data), indent=2) + "\n")


# ---------------------------------------------------------------------------- run


def measure_ceilings(args, ops: list[str], stack: contextlib.ExitStack, tmp: Path, report):
    """The raw ceilings the chosen operations compare with; starts slapd when LDAP sign-in
    is among them (it stays up for the backends' runs). Returns (d, slapd probes) or None."""
    ceilings = report["ceilings"]
    if "signin" in ops:
        from config import Config  # ROOT is on sys.path (ldap_signin puts it there)

        params = dict(
            time_cost=Config.ARGON2_TIME_COST,
            memory_cost=Config.ARGON2_MEMORY_COST,
            parallelism=Config.ARGON2_PARALLELISM,
        )
        say(
            f"ceiling: argon2id verify (m={params['memory_cost']} KiB t={params['time_cost']} "
            f"p={params['parallelism']}), {signin.HASH_PROCS} processes, {args.warmup:g} s "
            f"warm-up + {args.seconds:g} s ..."
        )
        ceilings["argon2"] = signin.measure_ceiling(args.seconds, args.warmup, params)
        say(f"ceiling: argon2id {ceilings['argon2']['rate']:.1f}/s")
    ldap = None
    if "ldap" in ops:
        say("slapd: starting (tests/ldap_server.py) ...")
        directory, d, slapd_pid = ldap_signin.start_directory(tmp / "slapd")
        stack.callback(_quiet(directory.stop))
        probes = {"slapd": lambda: proc_cpu_seconds(slapd_pid)}
        ldap_signin.check_raw(d)
        say(
            f"ceiling: ldap3 search+bind on reused connections ({d['url']}), "
            f"{CEILING_PROCS} processes, {args.warmup:g} s warm-up + {args.seconds:g} s ..."
        )
        ceilings["ldap"] = ldap_signin.measure_ceiling(
            d, CEILING_PROCS, args.seconds, args.warmup, probes
        )
        say(f"ceiling: ldap3 search+bind {ceilings['ldap']['rate']:.1f}/s")
        ldap = (d, probes, directory)
    if "cc" in ops:
        say(
            f"ceiling: RS256 jwt.encode, {oidc.SIGN_PROCS} processes, {args.warmup:g} s "
            f"warm-up + {args.seconds:g} s ..."
        )
        iss = f"https://localhost:{free_port()}"
        ceilings["rs256"] = oidc.measure_signing(args.seconds, args.warmup, iss)
        say(f"ceiling: RS256 sign {ceilings['rs256']['rate']:.1f}/s")
    return ldap


def _quiet(f: Callable[[], None]) -> Callable[[], None]:
    """A cleanup step that reports its failure instead of stopping the others."""

    def run() -> None:
        try:
            f()
        except Exception as exc:  # noqa: BLE001
            print(f"cleanup: {getattr(f, '__qualname__', f)} failed: {exc}", file=sys.stderr)

    return run


def run_backend(args, name: str, ops, ldap, stack: contextlib.ExitStack, tmp: Path, report):
    workdir = tmp / name
    workdir.mkdir()
    backend = Backend(name, workdir, args.postgres, args.redis)
    stack.callback(backend.cleanup)
    say(f"{name}: setup ({timewait_sockets()} sockets in TIME_WAIT) ...")
    url, extra, db_probes = backend.create()
    env, port, web, service_app = oidc.prepare(str(workdir), url, **extra)
    shown = url
    if extra:
        shown += f"; Redis {extra['IDP_REDIS_URL']}, key prefix {extra['IDP_REDIS_KEY_PREFIX']}"
    say(f"{name}: database ready: {shown}")
    runs: dict[str, dict] = {}
    rss: dict[str, dict[int, int]] = {}
    report["rss"][name] = rss

    try:
        main_ops = [k for k in ops if k != "ldap"]
        if main_ops:
            service = Service(env, port, workdir / "server.log")
            stack.callback(_quiet(service.stop))
            service.wait_ready()
            say(f"{name}: make serve (granian), {WORKERS} workers on 127.0.0.1:{port}")
            for key in main_ops:
                if key == "signin":
                    factory = functools.partial(sign_in_op, port, oidc.USERNAME, oidc.PASSWORD)
                elif key in ("discovery", "jwks", "introspect"):
                    factory = functools.partial(peer_bench.service_op, key, port, web, service_app)
                else:
                    factory = functools.partial(oidc_op, key, port, web, service_app)
                runs[key] = run_op(args, name, key, service, factory, db_probes)
            # After the rows, before the runs that are not rows: the sign-ins beside token
            # requests would leave a worker its 19 MiB argon2id block (identity.malloc gives
            # it back 2 s after the last hash).
            rss["main"] = service.worker_rss()
            if "signin" in main_ops and "cc" in main_ops:
                report["mixed"].append(
                    run_mixed(
                        args,
                        name,
                        service,
                        functools.partial(sign_in_op, port, oidc.USERNAME, oidc.PASSWORD),
                        functools.partial(oidc_op, "cc", port, web, service_app),
                        db_probes,
                    )
                )
            if args.check_generator and "cc" in main_ops:
                report.setdefault("generator_check", {})[name] = check_generator(
                    args, name, service, runs["cc"]["peak"], port, web, service_app, db_probes
                )
            if args.slow and "slow" not in report:  # once: the server is the same
                say(
                    f"{name}: {args.slow} slow clients (one header byte a second) while one "
                    f"client sends GET /healthz after GET /healthz, {args.seconds:g} s ..."
                )
                report["slow"] = {
                    "backend": name,
                    **slow_run(port, args.slow, args.seconds),
                }
            report["logs"][(name, "main")] = service.log_summary()
            service.stop()

        if "ldap" in ops and ldap is not None:
            d, probes, directory = ldap
            if not directory.running:
                raise BenchError(f"slapd ({d['url']}) is no longer running")
            lport = free_port()
            lenv = {**env, "IDP_ISSUER": f"https://localhost:{lport}", **ldap_signin.ldap_env(d)}
            service = Service(lenv, lport, workdir / "server-ldap.log")
            stack.callback(_quiet(service.stop))
            service.wait_ready()
            say(f"{name}: make serve with IDP_LDAP_* ({d['url']}) on 127.0.0.1:{lport}")
            factory = functools.partial(sign_in_op, lport, ldap_signin.USERNAME, d["password"])
            runs["ldap"] = run_op(args, name, "ldap", service, factory, {**probes, **db_probes})
            if not directory.running:
                raise BenchError(f"slapd ({d['url']}) exited during the LDAP sign-in runs")
            rss["ldap"] = service.worker_rss()
            report["logs"][(name, "ldap")] = service.log_summary()
            service.stop()
    finally:  # what was measured is reported, also when a later step failed
        for key in OPS:
            if key in runs:
                report["rows"].append(evaluate(name, key, runs[key], report["ceilings"], args.wide))
    top = max((v for r in rss.values() for v in r.values()), default=0)
    say(f"{name}: done; largest worker {top / 1e6:.1f} MB")
    backend.cleanup()


def run_peer(args, ops, stack: contextlib.ExitStack, tmp: Path, report) -> None:
    """The peer (oidc-provider, bench/peer) through the same runs as the service, for the
    operations both answer: those whose tokens each worker may keep in its memory, then, on a
    second peer whose workers share a store in Redis, refresh and the code flow. A peer that
    cannot run is reported, and the service's runs go on."""
    memory = [k for k in peer_bench.MEMORY_OPS if k in ops]
    shared = [k for k in peer_bench.SHARED_OPS if k in ops]
    if not memory and not shared:
        return
    say(f"peer: npm ci in {peer_bench.PEER_DIR} if needed ...")
    try:
        peer_bench.install()
    except BenchError as exc:
        report["peer_error"] = str(exc)
        say(f"peer: not measured: {exc}")
        return
    if memory:
        _peer_runs(args, memory, stack, tmp, report, None)
    if shared:
        try:
            import redis

            with redis.Redis.from_url(args.redis, socket_timeout=3) as client:
                client.ping()
        except redis.RedisError as exc:
            report["peer_error"] = f"Redis at {args.redis}, for {', '.join(shared)}: {exc}"
            say(f"peer: {', '.join(shared)} not measured: {report['peer_error']}")
            return
        prefix = f"idp-bench-peer-{secrets.token_hex(6)}:"
        stack.callback(lambda: say(f"peer: cleanup: {drop_redis_keys(args.redis, prefix)}"))
        _peer_runs(args, shared, stack, tmp, report, (args.redis, prefix))


def _peer_runs(args, keys, stack, tmp: Path, report, redis: tuple[str, str] | None) -> None:
    store = f"Redis {redis[0]}, key prefix {redis[1]}" if redis else "each worker's memory"
    try:
        peer = peer_bench.PeerService(
            free_port(), tmp / f"peer{'-redis' if redis else ''}.log", redis=redis
        )
    except BenchError as exc:
        report["peer_error"] = str(exc)
        say(f"peer: not measured: {exc}")
        return
    stack.callback(_quiet(peer.stop))
    try:
        peer.wait_ready()
        version = peer_bench.peer_version()
        report["peer_version"] = version
        say(
            f"peer: oidc-provider {version}, {WORKERS} workers (node:cluster), port {peer.port}, "
            f"storage in {store}"
        )
        for key in keys:
            run = run_op(args, "peer", key, peer, lambda key=key: peer_bench.peer_op(key, peer))
            report["peer"][key] = peer_bench.peer_row(key, NAMES[key], run, args.wide)
        report.setdefault("peer_rss", {})[store] = peer.worker_rss()
        report["logs"][("peer", f"oidc-provider, {store}")] = peer.log_summary()
    except BenchError as exc:
        report["peer_error"] = str(exc)
        say(f"peer: stopped: {exc}")
    finally:
        peer.stop()


GENERATOR_PROCS = 2
GENERATOR_ROUNDS = 2  # split, single, split, single after the peak run


def check_generator(args, name, service, single: dict, port, web, service_app, probes) -> dict:
    """Client credentials again, alternating: the load generator split in 2 processes
    (same thread count, `drive_split`), then in one process, twice, after the peak run (one
    process). If one process held the service back, the split runs would be faster than the
    single ones by more than the single runs differ among themselves. Also compared: the
    service's CPU per grant, which does not depend on the other load."""
    runs: dict[str, list[dict]] = {"single": [single], "split": []}
    for i in range(GENERATOR_ROUNDS):
        for kind in ("split", "single"):
            say(
                f"{name}: generator check {2 * i + (kind == 'single') + 1}/"
                f"{2 * GENERATOR_ROUNDS}: client credentials, {args.concurrency} threads in "
                f"{f'{GENERATOR_PROCS} processes' if kind == 'split' else 'one process'}, "
                f"{args.warmup:g} s "
                f"warm-up + {args.seconds:g} s ..."
            )
            make_op = oidc_op("cc", port, web, service_app)
            if kind == "split":
                r = drive_split(
                    GENERATOR_PROCS,
                    args.concurrency,
                    args.seconds,
                    args.warmup,
                    service,
                    make_op,
                    probes,
                )
            else:
                r = drive_ops(args.concurrency, args.seconds, args.warmup, service, make_op, probes)
            runs[kind].append(r)

    def figures(rs: list[dict]) -> dict:
        return {
            "rates": [r["rate"] for r in rs],
            "gen_cpu_pct": [r["client_cpu_pct"] for r in rs],
            "svc_cpu_pct": [r["service_cpu_pct"] for r in rs],
            "svc_ms_per_op": [
                1000 * r["service_cpu_s"] / len(r["full"]) if r["full"] else None for r in rs
            ],
            "other_cpu_pct": [r["others_pct"] + r.get("steal_pct", 0) for r in rs],
            "errors": sum(sum(r["errors"].values()) for r in rs),
        }

    single_f, split_f = figures(runs["single"]), figures(runs["split"])
    singles, splits = single_f["rates"], split_f["rates"]
    median_single, median_split = _median(singles), _median(splits)
    spread = (max(singles) - min(singles)) / median_single if median_single else float("inf")
    gain = median_split / median_single - 1 if median_single else float("nan")
    others = max(single_f["other_cpu_pct"] + split_f["other_cpu_pct"])
    if others > NOISY_PCT:
        verdict = f"inconclusive: other processes and steal used up to {others:.0f}% of one core"
    elif gain > max(0.10, spread):
        verdict = "the single generator process holds the service back"
    else:
        verdict = "no sign that one generator process holds the service back"
    result = {
        "procs": GENERATOR_PROCS,
        "single": single_f,
        "split": split_f,
        "gain": gain,
        "single_spread": spread,
        "other_cpu_pct": others,
        "verdict": verdict,
    }
    say(
        f"{name}: generator check: split {', '.join(f'{r:.1f}' for r in splits)}/s; single "
        f"{', '.join(f'{r:.1f}' for r in singles)}/s"
    )
    return result


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def main() -> int:
    with_huge_pages()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured time per run (10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run (2)")
    ap.add_argument("--concurrency", type=int, default=8, help="client threads, peak runs (8)")
    ap.add_argument(
        "--wide",
        type=int,
        default=64,
        help="client threads of a second peak run of the operations compared with the peer "
        "(64; 0: none)",
    )
    ap.add_argument(
        "--slow",
        type=int,
        default=200,
        help="slow clients against the first backend's server, after its runs (200; 0: none)",
    )
    ap.add_argument("--backends", default=",".join(BACKENDS), help="sqlite,postgres (both)")
    ap.add_argument("--ops", default=",".join(OPS), help=f"subset of {','.join(OPS)} (all)")
    ap.add_argument(
        "--check-generator",
        action="store_true",
        help="rerun client credentials with the load generator in 2 processes, and compare",
    )
    ap.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure oidc-provider (bench/peer, npm ci) on "
        f"{','.join(peer_bench.PEER_OPS)} and compare (on)",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument(
        "--postgres", default=POSTGRES, help=f"server to make databases in ({POSTGRES})"
    )
    ap.add_argument("--redis", default=REDIS, help=f"Redis for the postgres backend ({REDIS})")
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if (
        args.seconds <= 0
        or args.concurrency < 1
        or args.warmup < 0
        or min(args.wide, args.slow) < 0
    ):
        ap.error("--seconds must be > 0, --concurrency >= 1, --warmup >= 0, --wide and --slow >= 0")
    if (
        not backends
        or any(b not in BACKENDS for b in backends)
        or len(set(backends)) < len(backends)
    ):
        ap.error(f"--backends: choose from {','.join(BACKENDS)}")
    if not ops or any(o not in OPS for o in ops):
        ap.error(f"--ops: choose from {','.join(OPS)}")
    ops = [o for o in OPS if o in ops]

    signal.signal(signal.SIGTERM, interrupt)  # the same path as Ctrl-C: cleanup runs
    report: dict = {"ceilings": {}, "rows": [], "rss": {}, "logs": {}, "peer": {}, "mixed": []}
    status = 0
    stack = contextlib.ExitStack()
    try:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idp-bench-all-")))
        wide = f" ({args.wide} too, for the operations compared with the peer)" if args.wide else ""
        say(
            f"bench: backends {','.join(backends)}; operations {','.join(ops)}; {CORES} cores; "
            f"{args.concurrency} threads{wide}, {args.warmup:g} s warm-up + {args.seconds:g} s "
            f"per run; work directory {tmp}"
        )
        ldap = measure_ceilings(args, ops, stack, tmp, report)
        if args.peer:
            run_peer(args, ops, stack, tmp, report)
        for name in backends:
            run_backend(args, name, ops, ldap, stack, tmp, report)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr, flush=True)
        status = 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr, flush=True)
        status = 130
    finally:
        # Nothing interrupts the cleanup: the server, slapd, database, Redis keys, directory.
        old = (
            signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.signal(signal.SIGTERM, signal.SIG_IGN),
        )
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, old[0])
            signal.signal(signal.SIGTERM, old[1])

    print_report(args, report)
    if args.json:
        write_json(args.json, args, report)
        print(f"JSON: {args.json}")
    failed = [
        f"{r['backend']} {r['name']}"
        for r in report["rows"]
        if r["ok"] == 0
        or (r["half"] is not None and r["half"]["ok"] == 0)
        or (r["wide"] is not None and r["wide"]["ok"] == 0)
    ] + [
        f"peer {p['name']}"
        for p in report["peer"].values()
        if p["ok"] == 0 or p["half_ok"] == 0 or (p["wide"] is not None and p["wide"]["ok"] == 0)
    ]
    if failed:
        print(f"bench: every call failed: {', '.join(failed)}", file=sys.stderr)
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
