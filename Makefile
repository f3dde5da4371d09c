# Two commands matter: `make demo` and `make test`. Both set everything up from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_TEST_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: install system-deps test test-sqlite test-postgres demo bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use (a headless browser for the dashboard test).
system-deps:
	@bash scripts/system-deps.sh

test: install system-deps
	$(MAKE) test-sqlite
	$(MAKE) test-postgres

test-sqlite: install
	@echo "== test suite on SQLite =="
	env -u TEST_DATABASE_URL $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: install
	@echo "== test suite on PostgreSQL =="
	TEST_DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest -m "not dbless" $(PYTEST_ARGS)

demo: install
	$(BIN)/python -m webhook_service.demo

bench: install
	@echo "see bench/README.md for each benchmark's command"

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
