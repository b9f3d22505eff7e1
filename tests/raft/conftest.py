"""pytest options for the Raft suite: `--raft-seeds N` (or RAFT_SEEDS=N) widens the
randomized fault-schedule suite beyond its default 200 seeds."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--raft-seeds", type=int, default=None, help="fault schedules to run")
    parser.addoption("--raft-seed-start", type=int, default=0, help="first seed")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "raft_seed_block" in metafunc.fixturenames:
        n = metafunc.config.getoption("--raft-seeds") or int(os.environ.get("RAFT_SEEDS", "200"))
        start = metafunc.config.getoption("--raft-seed-start")
        block = 50
        blocks = [(s, min(s + block, start + n)) for s in range(start, start + n, block)]
        metafunc.parametrize("raft_seed_block", blocks, ids=[f"{a}-{b}" for a, b in blocks])
