# AINS developer commands. `make run` and `make test` are the two that matter.

VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
BENCH_VENV  := bench/.venv
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS  ?=
FLASK       := $(BIN)/flask --app wsgi
PYTEST_ARGS ?=

# python3.11 if there is one, else python3 when it is at least 3.11 (override: PYTHON=...).
ifndef PYTHON
PYTHON := $(shell command -v python3.11 2>/dev/null || \
	{ python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && command -v python3; })
endif

.PHONY: help install run test lint fmt clean bench

help:
	@echo "make install  create $(VENV) and install requirements-dev.txt (only when they changed)"
	@echo "make run      install, migrate, ensure an operator account, serve on http://localhost:8000/"
	@echo "make test     the whole test suite (extra pytest arguments: PYTEST_ARGS='-k foo -x')"
	@echo "make bench    AINS vs Celery and RQ, S1-S5 (about 30 min; BENCH_ARGS='--quick'): bench/README.md"
	@echo "make lint     ruff check + ruff format --check"
	@echo "make fmt      ruff format + ruff check --fix"
	@echo "make clean    remove $(VENV), $(BENCH_VENV), instance/*.db and caches"

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@if ! $(BIN)/python -m pip --version >/dev/null 2>&1; then \
		if [ -z "$(PYTHON)" ]; then \
			echo "error: Python >= 3.11 is required (no python3.11, and python3 is older)" >&2; \
			exit 1; \
		fi; \
		echo "Creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv --clear $(VENV) || { \
			echo "error: '$(PYTHON) -m venv' failed (on Debian: apt-get install python3-venv)" >&2; \
			exit 1; }; \
	fi
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# The baselines (Celery, RQ) live in their own environment, apart from the app's pinned one.
$(BENCH_STAMP): bench/requirements.txt
	@if ! $(BENCH_VENV)/bin/python -m pip --version >/dev/null 2>&1; then \
		echo "Creating $(BENCH_VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv --clear $(BENCH_VENV) || exit 1; \
	fi
	$(BENCH_VENV)/bin/python -m pip install --disable-pip-version-check -r bench/requirements.txt
	@touch $@

# Destructive for its own database and Redis DBs only (see bench/README.md); not part of `make test`.
bench: install $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

run: install
	$(FLASK) db upgrade
	$(FLASK) users ensure-admin
	$(FLASK) serve --with-agent

# pytest exits with 5 when it collected no tests: that is a failure here, not a pass.
test: install
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then \
		echo "" >&2; \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2; \
		echo "!!  make test: pytest collected NO tests (exit code 5). Failing.  !!" >&2; \
		echo "!!  PYTEST_ARGS: $${PYTEST_ARGS:-(none)}" >&2; \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2; \
		exit 1; \
	fi; \
	exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .ruff_cache test-artifacts
	rm -f instance/*.db instance/*.db-journal instance/*.db-wal instance/*.db-shm
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
