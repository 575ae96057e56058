# meshlog — run `make help` for the targets.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help

help:  ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=python3" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install meshlog with its dev extras

demo: $(STAMP)  ## write a sample multi-agent run into ./meshlog-demo.db, show it, then serve it on 127.0.0.1:8080
	$(BIN)/meshlog demo --url sqlite:///meshlog-demo.db

serve: $(STAMP)  ## serve ./meshlog.db (SQLite) on 127.0.0.1:8080
	$(BIN)/meshlog serve --url sqlite:///meshlog.db

lint: $(STAMP)  ## ruff, mypy --strict, and a check that generated sync code is current
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/python tools/gen_sync.py --check
	$(BIN)/mypy

test: lint  ## lint, then the whole test suite (PostgreSQL tests need 127.0.0.1:5432; required when CI=true)
	$(BIN)/pytest

bench: $(STAMP)  ## benchmarks against SQLite, PostgreSQL and the eventsourcing library; see docs/benchmarks.md
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.snapshots

sync: $(STAMP)  ## regenerate the sync modules from their async sources
	$(BIN)/python tools/gen_sync.py

format: $(STAMP)  ## format the code
	$(BIN)/ruff format src tests benchmarks tools
	$(BIN)/ruff check --fix src tests benchmarks tools

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install demo serve lint test bench sync format clean
