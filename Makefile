# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, train tiny models on the built-in data, compare, print the reports
#   make test   - create .venv, install, run the whole test suite (it starts its own PostgreSQL)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A CPU build of this torch is what the project is tested with; installing it first keeps pip
# from resolving `torch>=2.3` to a multi-GB CUDA build.
TORCH_VERSION := 2.13.0

.PHONY: install demo test test-fast lint bench schema clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/regress-action demo

test: install
	bash scripts/ensure-postgres.sh
	$(PY) -m pytest

# Unit tests only: no database server, no subprocesses of the CLI, under a minute of CPU.
test-fast: install
	$(PY) -m pytest tests/unit -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_stats.py

schema: install
	$(PY) -m regress_action.schema

clean:
	rm -rf $(VENV) regress-demo regress.db regress.db-wal regress.db-shm .pytest_cache .mypy_cache .ruff_cache
