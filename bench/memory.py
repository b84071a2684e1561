"""Memory of each make serve (granian) worker: at idle after start, and after N mixed requests.

    .venv/bin/python bench/memory.py [--checkpoints 10000,50000] [--concurrency 4]
        [--database-url URL] [--mix discovery,jwks,cc,introspect,userinfo|signin]
        [--idle SECONDS]

A fresh SQLite database in a temporary directory (as oidc.py sets it up: keys, one account,
a web app and a service app), the service as `make serve` runs it (2 workers, plain HTTP on
127.0.0.1), then C client threads sending the mix of issue 16's rows in turn: discovery,
JWKS, client credentials (a new RS256 JWT each), introspection of that token and userinfo
with a Bearer token. At idle and at each checkpoint (requests answered in all), for every
worker, from /proc/<pid>/smaps_rollup:
- RSS: resident pages, shared with the main process or not;
- USS: pages only this worker has (Private_Clean + Private_Dirty): what one more worker
  costs;
- PSS: RSS with each shared page divided among the processes that share it.
With --idle, once more after the last checkpoint and that many seconds without requests
(what a worker gives back when sign-ins stop: identity.malloc.trim_when_idle). The main
process's RSS is printed too. A benchmark: it prints figures, it never asserts.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import oidc
from _common import BenchError, Service, interrupt, request, sign_in_session

MIX = ("discovery", "jwks", "cc", "introspect", "userinfo")
MORE = ("signin",)  # GET + POST /login: one argon2id verify each


def smaps(pid: int) -> dict[str, int]:
    """RSS, USS, PSS and swap of a process in bytes (/proc/<pid>/smaps_rollup)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = 1024 * int(parts[0])
    return {
        "rss": fields.get("Rss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
        "pss": fields.get("Pss", 0),
        "swap": fields.get("Swap", 0),
    }


def snapshot(service: Service) -> dict:
    return {
        "main": smaps(service.proc.pid),
        "workers": {pid: smaps(pid) for pid in sorted(service.worker_pids())},
    }


class Mix:
    """One client thread's requests, in turn, each checked."""

    def __init__(self, port: int, web: oidc.App, service_app: oidc.App, mix: tuple[str, ...]):
        self.port, self.service_app, self.mix = port, service_app, mix
        phase = oidc.Phase(port, web, service_app)
        tokens = phase._tokens(phase._sign_in())
        self.bearer = {"Authorization": "Bearer " + tokens["access_token"]}
        self.token = ""
        self.i = 0

    def step(self) -> str | None:
        op = self.mix[self.i % len(self.mix)]
        self.i += 1
        if op == "signin":
            err, _, _, _ = sign_in_session(self.port, oidc.USERNAME, oidc.PASSWORD)
            return err
        if op == "cc" or (op == "introspect" and not self.token):
            err, body, _ = oidc.token_call(
                self.port, self.service_app, {"grant_type": "client_credentials"}
            )
            if err:
                return err
            self.token = body["access_token"]
            if op == "cc":
                return None
        if op == "discovery":
            status, text, _, _ = request(self.port, "GET", "/.well-known/openid-configuration")
            ok = status == 200 and '"issuer"' in text
        elif op == "jwks":
            status, text, _, _ = request(self.port, "GET", "/jwks.json")
            ok = status == 200 and '"keys"' in text
        elif op == "introspect":
            form = {"token": self.token, "token_type_hint": "access_token"}
            status, text, _, _ = request(
                self.port,
                "POST",
                "/introspect",
                {"Authorization": self.service_app.basic, "Content-Type": oidc.FORM},
                urllib.parse.urlencode(form),
            )
            ok = status == 200 and '"active":true' in text.replace(" ", "")
        else:
            status, text, _, _ = request(self.port, "GET", "/userinfo", self.bearer)
            ok = status == 200 and '"sub"' in text
        return None if ok else f"{op} -> {status} {text[:80]}"


def drive(mixes: list[Mix], count: int) -> dict[str, int]:
    """`count` requests in all, spread over one thread per Mix. Errors by message."""
    lock = threading.Lock()
    left = [count]
    errors: dict[str, int] = {}

    def client(mix: Mix) -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            try:
                err = mix.step()
            except OSError as exc:
                err = f"{type(exc).__name__}: {exc}"
            if err:
                with lock:
                    errors[err] = errors.get(err, 0) + 1

    threads = [threading.Thread(target=client, args=(m,), daemon=True) for m in mixes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def mb(n: int) -> str:
    return f"{n / 1e6:7.1f}"


def print_row(label: str, snap: dict) -> None:
    for pid, m in snap["workers"].items():
        print(
            f"{label:<14}{'worker ' + str(pid):<16}{mb(m['rss'])}{mb(m['uss'])}{mb(m['pss'])}"
            f"{mb(m['swap'])}"
        )
    m = snap["main"]
    print(f"{label:<14}{'main':<16}{mb(m['rss'])}{mb(m['uss'])}{mb(m['pss'])}{mb(m['swap'])}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", default="10000,50000", help="requests answered in all")
    ap.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temp directory")
    ap.add_argument(
        "--mix",
        default=",".join(MIX),
        help=f"requests sent in turn (default {','.join(MIX)}; also: {','.join(MORE)})",
    )
    ap.add_argument(
        "--idle", type=float, default=0, help="also measure after this many idle seconds"
    )
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    mix = tuple(x.strip() for x in args.mix.split(",") if x.strip())
    if not mix or any(x not in MIX + MORE for x in mix):
        ap.error(f"--mix: choose from {','.join(MIX + MORE)}")
    checkpoints = sorted(int(x) for x in args.checkpoints.split(",") if x.strip())
    signal.signal(signal.SIGTERM, interrupt)
    figures: dict[str, dict] = {}
    service = None
    with tempfile.TemporaryDirectory(prefix="idp-bench-mem-") as tmp:
        try:
            env, port, web, service_app = oidc.prepare(tmp, args.database_url)
            service = Service(env, port, Path(tmp) / "server.log")
            service.wait_ready()
            figures["idle"] = snapshot(service)
            mixes = [Mix(port, web, service_app, mix) for _ in range(args.concurrency)]
            done = 0
            for n in checkpoints:
                errors = drive(mixes, n - done)
                done = n
                figures[str(n)] = snapshot(service)
                for err, k in sorted(errors.items(), key=lambda e: -e[1])[:5]:
                    print(f"after {n}: x{k} {err}", file=sys.stderr)
                if service.proc.poll() is not None:
                    raise BenchError(f"the server exited:\n{service.log_tail()}")
            if args.idle:
                time.sleep(args.idle)
                figures[f"idle {args.idle:g} s"] = snapshot(service)
        except BenchError as exc:
            print(f"memory bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("memory bench: interrupted", file=sys.stderr)
            return 130
        finally:
            if service is not None:
                service.stop()
    print(f"{'after':<14}{'process':<16}{'RSS':>7}{'USS':>7}{'PSS':>7}{'swap':>7}   (MB = 10^6 B)")
    for label, snap in figures.items():
        print_row(label if not label.isdigit() else f"{int(label):,} req", snap)
    print(
        f"make serve (granian), 2 workers, "
        f"{args.database_url.split(':')[0] if args.database_url else 'SQLite'}; "
        f"{args.concurrency} client threads, one new "
        f"connection per request; the mix in turn: {', '.join(mix)}. USS = Private_Clean + "
        "Private_Dirty (what the worker alone holds)."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
