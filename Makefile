# Two commands: `make run` serves the IdP over HTTPS; `make test` runs the whole suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app idp
PYTHON ?= python3
# System packages the tests need: Chromium for the browser test, certutil to make it trust
# the generated CA, and OpenLDAP for the directory tests.
TEST_DEBS := chromium libnss3-tools slapd ldap-utils

.PHONY: run install test test-deps lint bench bench-ldap clean

run: install
	$(FLASK) setup
	$(PY) idp.py

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements.txt requirements-test.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

test-deps: $(VENV)/.test-installed
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
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

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

bench: test-deps
	$(PY) bench/signin.py
	$(PY) bench/ldap_signin.py

bench-ldap: test-deps
	$(PY) bench/ldap_signin.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
