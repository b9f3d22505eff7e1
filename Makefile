# Two commands for a newcomer: `make cluster` (a local three-node cluster) and
# `make test` (the test suite). Both create .venv with every dependency first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test test-all cluster cluster-down cluster-status single lint proto bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The default run: everything but the tests marked slow; raft coverage >= 90%.
test: $(VENV)/.installed
	$(PY) -m pytest -q --cov=kvstore/raft --cov-report=term --cov-fail-under=90

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
