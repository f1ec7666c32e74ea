# Grid: `make demo` and `make test` work on a fresh machine (they build .venv themselves).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-unit test-integration test-e2e lint typecheck bench services services-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	bash scripts/demo.sh

# Services the e2e tier needs (Docker daemon, a systemd container; checked). Idempotent.
services: install
	bash scripts/services-up.sh

services-down:
	bash scripts/services-down.sh

test: install lint services
	@set -o pipefail; rc=0; \
	$(PY) -m pytest -p no:cacheprovider -q -ra tests || rc=$$?; \
	bash scripts/services-down.sh; \
	exit $$rc

test-unit: install
	$(PY) -m pytest -p no:cacheprovider -q tests/unit

test-integration: install
	$(PY) -m pytest -p no:cacheprovider -q tests/integration

test-e2e: install services
	$(PY) -m pytest -p no:cacheprovider -q tests/e2e

lint: install
	$(VENV)/bin/ruff check grid tests bench
	$(VENV)/bin/ruff format --check grid tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Every bench/ script with --json (bench/run_all.py); the services let platforms.py cover
# docker and systemd. Results go to docs/BENCHMARKS.md by hand, with machine and date.
bench: install services
	@set -o pipefail; rc=0; \
	$(PY) bench/run_all.py || rc=$$?; \
	bash scripts/services-down.sh; \
	exit $$rc

clean:
	rm -rf $(VENV) .grid build *.egg-info
