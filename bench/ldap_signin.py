"""LDAP sign-in throughput under make serve (granian), against the ceiling of raw ldap3 search+bind.

    .venv/bin/python bench/ldap_signin.py [--seconds N] [--concurrency C] [--warmup W]
        [--ceiling-procs P] [--context-seconds S]

1. A real OpenLDAP slapd in a temporary directory (tests/ldap_server.py: people, groups with
   one nested group, the ppolicy and memberof overlays), and a fresh SQLite database.
2. The ceiling: raw ldap3 search (as the service account, (uid=ada) under the people base,
   the attributes the connector asks for) + bind (as ada, with the password policy control
   the connector sends) per second, P processes (default 2, one per server worker), each
   with one service connection for searches and one for binds, reused, as the connector's
   pools do. Service not running.
3. The service under make serve (granian; 2 workers, plain HTTP on 127.0.0.1 as behind a
   TLS-terminating proxy), IDP_LDAP_* pointing at slapd over plain ldap:// (no StartTLS:
   like for like with the raw loop), group search on (IDP_LDAP_GROUP_BASE set, nested groups
   followed), driven by C client threads doing GET /login + POST /login as `ada` for N
   seconds after a warm-up (the first sign-in creates her account: inside the warm-up).
4. For context, the raw loop again with two new connections per sign-in (after the
   service run, S seconds: every closed connection leaves a socket in TIME_WAIT).
5. One table with the CPU of the load generator, the service and slapd; slapd and
   the server are always stopped at the end.

A benchmark: it never asserts, it prints figures. Exit 0 when it ran; 1 when slapd or the
service did not start, setup failed, or every sign-in failed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import signal
import sys
import tempfile
from pathlib import Path

from _common import (
    CORES,
    ROOT,
    WORKERS,
    BenchError,
    Service,
    drive,
    free_port,
    interrupt,
    measure_processes,
    pct,
    proc_cpu_seconds,
    run_flask,
    service_env,
    timed_loop,
    timewait_sockets,
)

# tests/ldap_server.py (slapd) and the identity package (its settings, for like-for-like).
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

USERNAME = "ada"
FILTER = "(uid={username})"  # the connector's default IDP_LDAP_USER_FILTER


# ---------------------------------------------------------------------------- setup


def start_directory(workdir: Path):
    """(directory, d, slapd pid): slapd started by tests/ldap_server.py in workdir, and what
    the raw loop and the service need to know of it (d). Stop it with directory.stop()."""
    from ldap_server import SlapdError, launch

    try:
        directory = launch(workdir)
    except SlapdError as exc:
        raise BenchError(f"cannot start slapd: {exc}") from exc
    try:
        slapd_pid = int((workdir / "slapd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        directory.stop()
        raise BenchError(f"slapd wrote no pid file: {exc}") from exc
    d = dict(
        url=directory.url,
        bind_dn=directory.bind_dn,
        bind_password=directory.bind_password,
        people_dn=directory.people_dn,
        groups_dn=directory.groups_dn,
        password=directory.passwords[USERNAME],
    )
    return directory, d, slapd_pid


def ldap_env(d: dict) -> dict[str, str]:
    """IDP_LDAP_* for the service: slapd over plain ldap:// (no StartTLS, like the raw loop),
    group search on (IDP_LDAP_GROUP_BASE, nested groups followed). The server runs as
    production does, which refuses plain ldap:// unless told that it is meant (loopback)."""
    return dict(
        IDP_LDAP_URL=d["url"],
        IDP_LDAP_START_TLS="false",
        IDP_ALLOW_INSECURE_LDAP_PLAINTEXT="true",
        IDP_LDAP_BIND_DN=d["bind_dn"],
        IDP_LDAP_BIND_PASSWORD=d["bind_password"],
        IDP_LDAP_USER_BASE=d["people_dn"],
        IDP_LDAP_GROUP_BASE=d["groups_dn"],
    )


def check_raw(d: dict) -> None:
    """One raw search+bind on reused and on new connections; BenchError with the reason."""
    for reuse in (True, False):
        op, done = _ldap_op(d, reuse)
        try:
            err = op()
        finally:
            done()
        if err:
            raise BenchError(f"raw search+bind as {USERNAME} failed: {err}")


def measure_ceiling(d: dict, procs: int, seconds: float, warmup: float, probes) -> dict:
    """Raw ldap3 search+bind on reused connections, `procs` processes."""
    return measure_processes(_ldap_worker, (d, True), procs, seconds, warmup, probes)


# ---------------------------------------------------------------------------- ceiling


def _ldap_worker(start: float, warmup: float, seconds: float, out, d: dict, reuse: bool) -> None:
    op, done = _ldap_op(d, reuse)
    try:
        out.put(timed_loop(op, start, warmup, seconds))
    finally:
        done()


def _ldap_op(d: dict, reuse: bool):
    """(op, done): op() does one search+bind as the connector does it on the wire (same
    connection options, attributes and bind control) on reused or new connections, and
    returns an error text or None; done() closes the reused connections."""
    from ldap3 import NONE, SIMPLE, SUBTREE, Connection, Server

    from identity.connectors.ldap_answers import PPOLICY_OID
    from identity.connectors.ldap_connection import Settings, close

    attributes = Settings(urls=(d["url"],), group_base=d["groups_dn"]).user_attributes
    flt = FILTER.format(username=USERNAME)
    server = Server(d["url"], get_info=NONE, connect_timeout=5)

    def connect(user: str | None = None, password: str | None = None) -> Connection:
        conn = Connection(
            server,
            user=user,
            password=password,
            authentication=SIMPLE if user else None,
            receive_timeout=5,
            raise_exceptions=False,
            auto_referrals=False,
            read_only=True,
        )
        conn.open()
        if user and not conn.bind():
            raise BenchError(f"service bind failed: {conn.result}")
        return conn

    def search_bind(svc: Connection, usr: Connection) -> str | None:
        if not svc.search(d["people_dn"], flt, search_scope=SUBTREE, attributes=attributes):
            return f"search: {svc.result.get('description')}"
        entries = [e for e in svc.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            return f"search found {len(entries)} entries"
        ok = usr.rebind(
            user=entries[0]["dn"], password=d["password"], controls=[(PPOLICY_OID, False, None)]
        )
        if not ok:
            return f"bind: {usr.result.get('description')}"
        return None

    if reuse:
        svc, usr = connect(d["bind_dn"], d["bind_password"]), connect()

        def done() -> None:
            close(svc)
            close(usr)

        return (lambda: search_bind(svc, usr)), done

    def fresh() -> str | None:
        svc = connect(d["bind_dn"], d["bind_password"])
        try:
            usr = connect()
            try:
                return search_bind(svc, usr)
            finally:
                close(usr)
        finally:
            close(svc)

    return fresh, lambda: None


def ldap_ops_per_sign_in(d: dict) -> tuple[collections.Counter[str], list[str]]:
    """The LDAP operations one authenticate() makes, counted in this process with the
    service's own connector (pools already warm, as in a worker), and the groups found."""
    from ldap3 import Connection

    from identity.connectors.ldap import LdapConnector
    from identity.connectors.ldap_connection import Settings

    connector = LdapConnector(
        Settings(
            urls=(d["url"],),
            bind_dn=d["bind_dn"],
            bind_password=d["bind_password"],
            user_base=d["people_dn"],
            group_base=d["groups_dn"],
        )
    )
    counts: collections.Counter[str] = collections.Counter()
    orig_search, orig_bind = Connection.search, Connection.bind

    def search(self, search_base, *args, **kwargs):
        kind = "group search" if search_base == d["groups_dn"] else "user search"
        counts[kind] += 1
        return orig_search(self, search_base, *args, **kwargs)

    def bind(self, *args, **kwargs):
        counts["bind"] += 1
        return orig_bind(self, *args, **kwargs)

    try:
        connector.authenticate(USERNAME, d["password"])  # opens the pooled connections
        Connection.search, Connection.bind = search, bind
        identity = connector.authenticate(USERNAME, d["password"])
    finally:
        Connection.search, Connection.bind = orig_search, orig_bind
        connector.close()
    if identity is None:
        raise BenchError(f"the connector refused {USERNAME} with her password")
    return counts, list(identity.groups)


# ---------------------------------------------------------------------------- report


def _fmt(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'-' if value is None else f'{value:.{digits}f}':>{width}}"


def print_report(args, ceiling: dict, context: dict, load: dict, ops, groups, d: dict) -> None:
    c_rate = ceiling["rate"]
    rate = load["rate"]
    slapd_load = load["probe_pct"]["slapd"]
    rows = [
        # name, ops/s, latencies, ceiling, gen CPU %, service CPU %, slapd CPU %
        (
            f"raw search+bind, {args.ceiling_procs} proc{'s' if args.ceiling_procs > 1 else ''}",
            c_rate,
            ceiling["lat"],
            c_rate,
            ceiling["cpu_pct"],
            None,
            ceiling["probe_pct"]["slapd"],
        ),
        (
            "  new conns per sign-in",
            context["rate"],
            context["lat"],
            c_rate,
            context["cpu_pct"],
            None,
            context["probe_pct"]["slapd"],
        ),
        (
            "LDAP sign-in (GET+POST)",
            rate,
            load["full"],
            c_rate,
            load["client_cpu_pct"],
            load["service_cpu_pct"],
            slapd_load,
        ),
        ("  POST /login", rate, load["post"], c_rate, None, None, None),
        ("  GET /login", rate, load["get"], None, None, None, None),
    ]
    print()
    print(
        f"{'operation':<26}{'ops/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'ceiling':>9}{'ratio':>7}"
        f"{'gen %':>7}{'svc %':>7}{'slapd %':>9}"
    )
    for name, r, lat, ceil, gen, svc, slapd in rows:
        print(
            f"{name:<26}{r:>8.1f}{pct(lat, 50):>8.1f}{pct(lat, 99):>8.1f}{_fmt(ceil, 9)}"
            f"{_fmt(r / ceil if ceil else None, 7, 3)}"
            f"{_fmt(gen, 7, 0)}{_fmt(svc, 7, 0)}{_fmt(slapd, 9, 0)}"
        )
    print()
    ratio = rate / c_rate if c_rate else float("nan")
    print(
        f"LDAP sign-in / raw search+bind: {ratio:.3f} (target >= 0.70: "
        f"{'met' if ratio >= 0.70 else 'NOT met'})"
    )
    print(
        f"sign-in latency (GET+POST): p50 {pct(load['full'], 50):.1f} ms, "
        f"p99 {pct(load['full'], 99):.1f} ms; POST only: p50 {pct(load['post'], 50):.1f} ms, "
        f"p99 {pct(load['post'], 99):.1f} ms; raw search+bind p50 {pct(ceiling['lat'], 50):.2f} ms"
    )
    n_ops = sum(ops.values())
    print(
        f"LDAP operations per sign-in: {n_ops} ({ops['user search']} user search, "
        f"{ops['bind']} bind, {ops['group search']} group searches: "
        f"IDP_LDAP_GROUP_BASE={d['groups_dn']}, nested groups followed) against 2 in the "
        f"raw loop; groups: {', '.join(sorted(groups)) or '(none)'}"
    )
    ok = len(load["full"])
    svc_ms = 1000 * load["service_cpu_s"] / ok if ok else float("nan")
    slapd_ms = 1000 * load["probe_s"]["slapd"] / ok if ok else float("nan")
    raw_slapd_ms = 1000 * ceiling["probe_s"]["slapd"] / ceiling["n"] if ceiling["n"] else 0
    print(
        f"CPU per sign-in: service {svc_ms:.2f} ms (raw ldap3 client "
        f"{1000 * ceiling['cpu_per_op']:.2f} ms per search+bind, "
        f"{svc_ms / (1000 * ceiling['cpu_per_op']):.1f}x); slapd {slapd_ms:.2f} ms "
        f"({raw_slapd_ms:.2f} ms per raw search+bind)"
    )
    gen_ms = 10 * load["client_cpu_pct"] * args.seconds / ok if ok else float("nan")
    bound = CORES * 1000 / (svc_ms + slapd_ms + gen_ms) if ok else float("nan")
    print(
        f"CPU bound: {svc_ms + slapd_ms + gen_ms:.2f} ms of CPU per sign-in (service + slapd "
        f"+ load generator) allow at most {bound:.0f} sign-ins/s on {CORES} cores, "
        f"{bound / c_rate:.3f} of the ceiling"
    )
    busy = load["client_cpu_pct"] + load["service_cpu_pct"] + slapd_load + load["others_pct"]
    idle = max(0.0, CORES * 100 - busy)
    shares = {
        "the service": load["service_cpu_pct"],
        "slapd": slapd_load,
        "the load generator": load["client_cpu_pct"],
    }
    top = max(shares, key=shares.__getitem__)
    print(
        f"CPU split, service run (% of one core, {CORES * 100}% = all {CORES} cores): "
        f"service {load['service_cpu_pct']:.0f}%, slapd {slapd_load:.0f}%, load generator "
        f"{load['client_cpu_pct']:.0f}%, other {load['others_pct']:.0f}%, idle {idle:.0f}%"
    )
    if idle < 0.05 * CORES * 100:
        print(f"  the cores are saturated; {top} uses most ({shares[top]:.0f}%)")
    else:
        print(
            f"  {top} uses most ({shares[top]:.0f}%); {idle:.0f}% idle: the sync workers also "
            "wait (LDAP round trips, each client closing its connection), not only compute"
        )
    c_busy = ceiling["cpu_pct"] + ceiling["probe_pct"]["slapd"] + ceiling["others_pct"]
    print(
        f"CPU split, raw ceiling: ldap3 processes {ceiling['cpu_pct']:.0f}%, slapd "
        f"{ceiling['probe_pct']['slapd']:.0f}%, other {ceiling['others_pct']:.0f}%, idle "
        f"{max(0.0, CORES * 100 - c_busy):.0f}%"
    )
    errors = load["errors"]
    print(
        f"sign-ins: {ok} ok, {sum(errors.values())} errors in {args.seconds:g} s "
        f"({args.concurrency} client threads, {WORKERS} server workers); raw errors: "
        f"{sum(ceiling['errors'].values())} reused, {sum(context['errors'].values())} new conns"
    )
    for err, n in (errors + ceiling["errors"] + context["errors"]).most_common(5):
        print(f"  error x{n}: {err}")
    others = max(ceiling["others_pct"], load["others_pct"])
    print(
        f"other processes on the machine: {ceiling['others_pct']:.0f}% of one core during "
        f"the ceiling, {load['others_pct']:.0f}% during the service run"
        + (
            " -- NOISY: throughput figures are unreliable, run again on a quiet machine"
            if others > 10
            else ""
        )
    )
    print(
        f"new conns row: {args.context_seconds:g} s after the service run, "
        f"{context['timewait_before']} sockets in TIME_WAIT before it"
    )
    print(
        "LDAP over plain ldap:// on loopback (no StartTLS), HTTP TLS excluded (as behind a "
        "TLS-terminating proxy)."
    )


# ---------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time (default 20)")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (default 3)")
    ap.add_argument(
        "--ceiling-procs",
        type=int,
        default=WORKERS,
        help=f"processes for the raw search+bind ceiling (default {WORKERS}, as many as "
        "server workers)",
    )
    ap.add_argument(
        "--context-seconds",
        type=float,
        default=5.0,
        help="measured time of the new-connections row (default 5)",
    )
    args = ap.parse_args()
    if (
        args.seconds <= 0
        or args.concurrency < 1
        or args.warmup < 0
        or args.ceiling_procs < 1
        or args.context_seconds <= 0
    ):
        ap.error(
            "--seconds and --context-seconds must be > 0, --concurrency and --ceiling-procs "
            ">= 1, --warmup >= 0"
        )

    # SIGTERM takes the same path as Ctrl-C: the finally blocks stop the server and slapd.
    signal.signal(signal.SIGTERM, interrupt)

    service: Service | None = None
    directory = None
    with tempfile.TemporaryDirectory(prefix="idp-bench-ldap-") as tmp:
        try:
            tw = timewait_sockets()
            if tw > 5000:
                print(
                    f"warning: {tw} sockets in TIME_WAIT (a recent run?): new connections "
                    "are slower until they expire (tcp_fin_timeout, usually 60 s)",
                    flush=True,
                )
            directory, d, slapd_pid = start_directory(Path(tmp) / "slapd")
            probes = {"slapd": lambda: proc_cpu_seconds(slapd_pid)}

            port = free_port()
            env = service_env(port, f"sqlite:///{tmp}/bench.sqlite3", **ldap_env(d))
            print(
                f"setup: slapd {directory.url} (pid {slapd_pid}), database in {tmp}; {CORES} cores",
                flush=True,
            )
            run_flask(env, ["db", "upgrade"])
            check_raw(d)  # fail fast, with the reason, before measuring
            ops, groups = ldap_ops_per_sign_in(d)

            print(
                f"ceiling: raw ldap3 search+bind, reused connections, {args.ceiling_procs} "
                f"processes, {args.warmup:g} s warm-up + {args.seconds:g} s "
                "(service not running) ...",
                flush=True,
            )
            ceiling = measure_ceiling(d, args.ceiling_procs, args.seconds, args.warmup, probes)

            service = Service(env, port, Path(tmp) / "server.log")
            service.wait_ready()
            print(
                f"service: make serve (granian), {WORKERS} workers on 127.0.0.1:{port}; "
                f"{args.concurrency} client threads signing in as {USERNAME}, "
                f"{args.warmup:g} s warm-up + {args.seconds:g} s ...",
                flush=True,
            )
            load = drive(
                port,
                args.concurrency,
                args.seconds,
                args.warmup,
                service,
                USERNAME,
                d["password"],
                probes,
            )
            if service.proc.poll() is not None:
                print(f"warning: the server exited during the run:\n{service.log_tail()}")
            service.stop()

            timewait_before = timewait_sockets()
            print(
                f"context: raw search+bind, new connections per sign-in, "
                f"{args.ceiling_procs} processes, {min(args.warmup, 1.0):g} s warm-up + "
                f"{args.context_seconds:g} s ...",
                flush=True,
            )
            context = measure_processes(
                _ldap_worker,
                (d, False),
                args.ceiling_procs,
                args.context_seconds,
                min(args.warmup, 1.0),
                probes,
            )
            context["timewait_before"] = timewait_before
        except BenchError as exc:
            print(f"ldap signin bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("ldap signin bench: interrupted", file=sys.stderr)
            return 130
        finally:
            if service is not None:
                service.stop()
            if directory is not None:
                with contextlib.suppress(Exception):
                    directory.stop()

    print_report(args, ceiling, context, load, ops, groups, d)
    if not load["full"]:
        print("ldap signin bench: every sign-in failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
