#!/bin/sh
# `make serve`, the container's command and a plain host's: bring the database schema up to
# date, make the signing keys and the first administrator (from IDP_ADMIN_*, when the database
# has no administrator: docs/docker.md), then serve with granian (identity/serve.py:
# IDP_WORKERS processes on IDP_BIND, plain HTTP for the TLS proxy in front). Safe to run from
# every node at start: Alembic applies each migration once, and the administrator is made once.
set -eu
cd "$(dirname "$0")/.."
BIN="${IDP_VENV_BIN:-.venv/bin}"
"$BIN/flask" --app idp setup
# The workers never need the first administrator's password: keep it out of their memory.
unset IDP_ADMIN_PASSWORD
# glibc's malloc asks for transparent huge pages for its large blocks: argon2id's 19 MiB
# buffer then costs each sign-in ~10% less CPU (identity/malloc.py).
GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
export GLIBC_TUNABLES
exec "$BIN/python" -m identity.serve
