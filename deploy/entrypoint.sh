#!/bin/sh
# The container's command (and a plain host's): bring the database schema up to date, then
# serve with gunicorn (gunicorn.conf.py: sync workers, one per core, IDP_BIND).
# Migrations are safe to run from every node at start: Alembic applies each one once.
set -eu
cd "$(dirname "$0")/.."
BIN="${IDP_VENV_BIN:-.venv/bin}"
"$BIN/flask" --app idp db upgrade
exec "$BIN/gunicorn" idp:app
