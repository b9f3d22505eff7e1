# Two commands for a newcomer: `make cluster` (a local three-node cluster) and
# `make test` (the test suite). Both create .venv with every dependency first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCK_RUNTIME := requirements/runtime.txt
LOCK_DEV := requirements/dev.txt
UV_COMPILE := $(VENV)/bin/uv pip compile -q --universal --python-version 3.11 \
	--generate-hashes --no-strip-extras --custom-compile-command 'make lock'

.PHONY: lock test test-lower-bounds test-all cluster cluster-down cluster-status single lint proto bench typecheck

# Every package comes from the lock (exact versions, sha256 hashes); the project
# itself is installed without its dependency ranges (--no-deps) and without build
# isolation, so nothing is resolved on the day of the install.
$(VENV)/.installed: pyproject.toml $(LOCK_DEV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r $(LOCK_DEV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Refresh the locks from pyproject.toml's ranges (newest versions that fit):
# runtime.txt (the image, users), dev.txt (make, CI; runtime pins kept), build.txt
# (the wheel's build backend).
# UV_ARGS='--upgrade-package grpcio' and the like refresh a single package.
lock: $(VENV)/.installed
	$(UV_COMPILE) pyproject.toml -o $(LOCK_RUNTIME) $(UV_ARGS)
	$(UV_COMPILE) pyproject.toml --extra dev -c $(LOCK_RUNTIME) -o $(LOCK_DEV) $(UV_ARGS)
	$(UV_COMPILE) requirements/build.in -c $(LOCK_DEV) -o requirements/build.txt $(UV_ARGS)

# pyproject.toml's lower bounds, resolved on the day and tested (needs the registry).
test-lower-bounds: $(VENV)/.installed
	UV=$(VENV)/bin/uv PYTHON=$(PYTHON) scripts/test_lower_bounds.sh

# The default run: the dependency direction (import-linter contracts in
# pyproject.toml), the type check, then everything but the tests marked slow;
# raft coverage >= 90%.
test: $(VENV)/.installed typecheck
	$(PY) -m pytest -q --cov=kvstore/raft --cov-report=term --cov-fail-under=90

# Layers and types, as configured in pyproject.toml ([tool.importlinter], [tool.mypy]).
typecheck: $(VENV)/.installed
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# Everything, including slow end-to-end tests and many more raft seeds.
test-all: $(VENV)/.installed
	RAFT_SEEDS=2000 $(PY) -m pytest -q -m ''

cluster: $(VENV)/.installed
	$(PY) -m kvstore.devcluster up --size 3 --dir .cluster

cluster-down: $(VENV)/.installed
	$(PY) -m kvstore.devcluster down --dir .cluster

cluster-status: $(VENV)/.installed
	$(PY) -m kvstore.devcluster status --dir .cluster

# The embedded default: one node in ./default.kvstore on 127.0.0.1:2379.
single: $(VENV)/.installed
	$(VENV)/bin/kvstore

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check kvstore tests benchmarks scripts

proto: $(VENV)/.installed
	$(PY) scripts/gen_proto.py

bench: $(VENV)/.installed
	$(PY) benchmarks/kv_bench.py --start-kvstore --compare-etcd
