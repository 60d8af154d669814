# clipsearch — developer entry points. `make run` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE := 1

.PHONY: run test check lint typecheck imports venv system-deps clean

# The venv needs Python 3.11: python3.11 if present, else python3 when that is 3.11.
$(VENV)/bin/python:
	@py=$$(command -v $(PYTHON) || command -v python3); \
	  $$py -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	  || { echo "clipsearch needs Python 3.11; found $$($$py --version 2>&1)"; exit 1; }; \
	  $$py -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

run: $(STAMP)
	$(VENV)/bin/clipsearch demo --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check service indexer models tests
	$(VENV)/bin/ruff format --check service indexer models tests

imports: $(STAMP)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint imports typecheck

test: system-deps $(STAMP) check
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .clipsearch .pytest_cache .mypy_cache .ruff_cache
