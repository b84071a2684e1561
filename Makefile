# Two commands: `make run` serves the IdP over HTTPS; `make test` runs the whole suite.
SHELL := /bin/bash
# PYTHON: the interpreter to build the virtualenv with (3.11 or newer), e.g.
# `make test PYTHON=python3.13`; the virtualenv is rebuilt when it changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# System packages the tests need: Chromium for the browser test, certutil to make it trust
# the generated CA, OpenLDAP for the directory tests, Node.js with npm for the relying
# party written with openid-client (tests/rp-node), and Redis for the lockout counters (the
# tests use the one on 127.0.0.1:6379), nginx and Caddy in front of an app for forward
# authentication (run as the tests' own processes), and docker-compose (1.29, Python) to
# validate compose.yaml against the Compose Specification without a Docker engine. A package
# counts as there when an installed package provides it (NodeSource's nodejs provides npm).
TEST_DEBS := chromium libnss3-tools slapd ldap-utils nodejs npm redis-server apache2 libapache2-mod-auth-openidc nginx caddy docker-compose

.PHONY: run serve demo install python test test-deps lint screenshots bench bench-quick clean

# idp.py checks the port, sets up as `flask setup` does, and shows the demo admin's
# password last, just before it listens.
run: install
	$(PY) idp.py

# Production: the schema brought up to date, then granian on IDP_BIND (127.0.0.1:8000) with
# IDP_WORKERS processes, plain HTTP for the TLS proxy in front (identity/serve.py). The
# Dockerfile runs the same script.
serve: install
	IDP_VENV_BIN=$(VENV)/bin deploy/entrypoint.sh

# The IdP and an app that signs in with it (examples/flask_app) side by side; Ctrl-C stops both.
demo: install
	$(PY) examples/run_demo.py

install: python $(VENV)/.installed

# A supported PYTHON, said in one line; a virtualenv made by another interpreter (or broken)
# is removed, so that the next step builds it again with this one.
python:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: this project needs Python 3.11 or newer; run make with PYTHON=python3.12, for example." >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "$(PYTHON) is Python " + sys.version.split()[0] + ": this project needs 3.11 or newer (3.11, 3.12, 3.13); run make with PYTHON=python3.12, for example.")'
	@if [ -e $(VENV) ]; then \
	  want=$$($(PYTHON) -c 'import sys; print(sys.version)'); \
	  have=$$($(PY) -c 'import sys; print(sys.version)' 2>/dev/null || echo none); \
	  if [ "$$want" != "$$have" ]; then \
	    echo "$(VENV) was made with another Python ($${have%% *}); rebuilding it with $(PYTHON) ($${want%% *})"; \
	    rm -rf $(VENV); \
	  fi; \
	fi

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-test.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

test-deps: python $(VENV)/.test-installed
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || \
	  dpkg-query -W -f='$${db:Status-Status} $${Provides}\n' 2>/dev/null | grep -qE "^installed (.*[ ,])?$$p( |,|$$)" || \
	  missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@if [ ! -d tests/rp-node/node_modules/openid-client ] || [ tests/rp-node/package-lock.json -nt tests/rp-node/node_modules ]; then \
	  echo "installing openid-client for tests/rp-node (npm ci)"; \
	  (cd tests/rp-node && npm ci --no-audit --no-fund --silent) && touch tests/rp-node/node_modules; \
	fi

# The suite on SQLite, then again on PostgreSQL when IDP_TEST_POSTGRES_URL is set.
test: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/pytest
	@if [ -n "$$IDP_TEST_POSTGRES_URL" ]; then \
	  echo "== again on PostgreSQL: $$IDP_TEST_POSTGRES_URL"; \
	  IDP_TEST_DATABASE_URL="$$IDP_TEST_POSTGRES_URL" $(VENV)/bin/pytest; \
	fi

# The images in docs/screenshots (shown by the README), taken by the browser tests that
# visit those pages, so that they show the pages as they are.
screenshots: test-deps
	IDP_SCREENSHOTS=docs/screenshots $(VENV)/bin/pytest -q -m screenshots tests/test_browser.py

lint: python $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

# Every benchmark in one run and one table (bench/README.md): SQLite, then PostgreSQL + Redis
# on 127.0.0.1 (`make bench BENCH_ARGS="--backends sqlite"` without them), and the peer,
# oidc-provider (bench/all.py runs `npm ci` in bench/peer when needed; BENCH_ARGS=--no-peer
# leaves it out). test-deps: slapd, Node.js and npm.
bench: test-deps
	$(PY) bench/all.py $(BENCH_ARGS)

# The same in about 6 minutes: short windows, figures only good for a smoke test.
bench-quick: test-deps
	$(PY) bench/all.py --seconds 2 --warmup 1 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .ruff_cache test-artifacts
