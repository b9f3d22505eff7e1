"""Fixtures for kvctl tests: a session cluster per backend and an in-process runner.

`kvctl(*args, input=...)` runs `kvstore.cli.kvctl.run` in-process with click's
stream isolation and returns (exit code, stdout, stderr).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from kvstore.cli.kvctl import run
from tests.backends import BACKENDS, start_cluster, stop_fast

_counter = itertools.count()


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session", params=BACKENDS)
def cluster(request):
    c = start_cluster(request.param)
    yield c
    stop_fast(c)


@pytest.fixture
def kvctl(cluster):
    endpoints = ",".join(cluster.endpoints)

    def invoke(*args: str, input: str | None = None, env: dict | None = None) -> Result:
        runner = CliRunner()
        with runner.isolation(input=input, env=env) as (out, err, _):
            code = run(["--endpoints", endpoints, *args])
        return Result(code, out.getvalue().decode(), err.getvalue().decode())

    return invoke


@pytest.fixture
def ns(request) -> str:
    return f"/c{next(_counter)}-{request.node.name[:40]}/"

