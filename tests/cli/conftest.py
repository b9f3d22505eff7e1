"""Fixtures for kvctl tests: a session cluster per backend and an in-process runner.

`kvctl(*args, input=...)` runs `kvstore.cli.kvctl.run` in-process with click's
stream isolation and returns (exit code, stdout, stderr). The lead adds the
"kvstore" backend to BACKENDS (same shape as EtcdCluster).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from kvstore.cli.kvctl import run
from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available

BACKENDS = [pytest.param("etcd", marks=pytest.mark.etcd)]
_counter = itertools.count()


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session", params=BACKENDS)
def cluster(request):
    if request.param == "etcd":
        if not etcd_available():
            pytest.skip("etcd binaries not installed")
        c = EtcdCluster(size=3).start()
    else:
        raise ValueError(request.param)
    yield c
    _stop_fast(c)


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


def _stop_fast(c) -> None:
    """SIGKILL every member first: the data is thrown away anyway, and a
    graceful etcd cluster stop takes ~7 s (leaders try to hand over)."""
    if isinstance(c, EtcdCluster):
        for i in range(len(c.endpoints)):
            c.kill(i)
    c.stop()
