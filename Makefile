# Two commands matter: `make demo` and `make test`. Both set everything up from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_TEST_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
PYTEST_ARGS ?=

.PHONY: install system-deps test test-sqlite test-postgres demo bench clean lock check-lock

# Installs exactly the locked versions (hashes checked): the service, the emulator extra and the test tools.
$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e '.[emulator]'
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

# Regenerate the locks after editing requirements*.txt (versions already locked are kept; see README).
# The dev lock (runtime + emulator + tests) is resolved first; the runtime lock is its subset, same versions.
LOCK_FLAGS := --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock"
lock:
	test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install --quiet uv==$$(sed -n 's/^uv==//p' requirements-dev.txt); }
	$(BIN)/uv pip compile $(LOCK_FLAGS) -o requirements-dev.lock requirements-dev.txt
	$(BIN)/uv pip compile $(LOCK_FLAGS) -c requirements-dev.lock -o requirements.lock requirements.txt

# What CI runs first: the locks pin what requirements*.txt pin.
check-lock:
	$(PYTHON) scripts/check_lock.py

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
