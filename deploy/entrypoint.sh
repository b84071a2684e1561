#!/bin/sh
# `make serve`, the container's command and a plain host's: bring the database schema up to
# date, then serve with granian (identity/serve.py: IDP_WORKERS processes on IDP_BIND, plain
# HTTP for the TLS proxy in front).
# Migrations are safe to run from every node at start: Alembic applies each one once.
set -eu
cd "$(dirname "$0")/.."
BIN="${IDP_VENV_BIN:-.venv/bin}"
"$BIN/flask" --app idp db upgrade
exec "$BIN/python" -m identity.serve
