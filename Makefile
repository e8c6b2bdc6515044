# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, train tiny models on the built-in data, compare, print the reports
#   make test   - create .venv, install, run the whole test suite (it starts its own PostgreSQL)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch the project is tested with (a CPU build) is pinned in requirements-torch.txt, which
# the Dockerfile reads too; installing it first keeps pip from resolving `torch>=2.3` to a
# multi-GB CUDA build.
TORCH_REQUIREMENT := requirements-torch.txt
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(TORCH_REQUIREMENT))

.PHONY: install demo test test-fast coverage lint bench simulate schema manifests lock image-test release clean

$(STAMP): pyproject.toml $(TORCH_REQUIREMENT)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" \
		2>/dev/null || $(PY) -m pip install --quiet -r $(TORCH_REQUIREMENT)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/regress-action demo

test: install
	bash scripts/ensure-postgres.sh
	$(PY) -m pytest

# Unit tests only, less those marked slow (training the demo recipes): no database server, no
# subprocesses of the CLI, under a minute of CPU.
test-fast: install
	$(PY) -m pytest tests/unit -q -m "not slow"

# Line coverage of the package over the whole suite, the CLI's and the action's real processes
# included (see [tool.coverage] in pyproject.toml); slower than `make test`, which does not trace.
coverage: install
	bash scripts/ensure-postgres.sh
	$(PY) -m pytest --cov --cov-report=term-missing:skip-covered --cov-report=html

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/composite_action.py --check
	$(PY) scripts/lock.py --check

bench: install
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_stats.py
	$(PY) benchmarks/bench_report.py
	$(PY) benchmarks/bench_pipeline.py
	$(PY) benchmarks/bench_cache.py

# The statistics' error rates (A/A false alarms, power, coverage): docs/statistics.md.
simulate: install
	$(PY) benchmarks/sim_stats.py
	$(PY) benchmarks/sim_slices.py

schema: install
	$(PY) -m regress_action.schema

# run/action.yml (the composite action) from action.yml's inputs and outputs.
manifests: install
	$(PY) scripts/composite_action.py

# requirements.lock: the image's packages pinned with their hashes, resolved again from
# pyproject.toml and requirements-torch.txt (pip-compile keeps the pins the inputs allow).
lock: install
	$(PY) scripts/lock.py

# The action's image built from the Dockerfile and run the way the Actions runner runs it (not
# part of `make test`: it needs a Docker engine, started here from Debian's docker.io when none
# runs, and a Python base image, made with debootstrap when the pinned one cannot be pulled).
image-test: install
	command -v dockerd >/dev/null || (apt-get update && apt-get install -y --no-install-recommends docker.io)
	command -v docker >/dev/null || apt-get install -y --no-install-recommends docker.io
	command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap
	REGRESS_IMAGE_TEST=1 $(PY) -m pytest tests/image -p no:cacheprovider -s -q

# A release: a tagged commit whose action.yml runs the image the release workflow pushes to
# GHCR, then a commit building from the Dockerfile again (scripts/release.py). Push both after.
#   make release VERSION=1.2.0 IMAGE=ghcr.io/OWNER/regress-action
release:
	$(PYTHON) scripts/release.py prepare $(VERSION) --image $(IMAGE)

clean:
	rm -rf $(VENV) regress-demo regress.db regress.db-wal regress.db-shm .pytest_cache .mypy_cache .ruff_cache \
		.coverage .coverage.* htmlcov
