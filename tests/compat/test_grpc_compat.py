"""Raw gRPC requests (grpc_cases.GRPC_CASES): kvstore must answer like etcd.

Covers what etcdctl cannot send — nested txns, empty RequestOps, ignore_*
flags with values, size limits on reads vs writes, the transport limit —
comparing status code + exact message (or a summary of the reply and the
header fields present) with etcd's answers in fixtures/grpc_etcd.json,
which the etcd backend re-checks live (KVSTORE_REGEN_COMPAT=1 rewrites).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from compat_harness import record_or_compare
from grpc_cases import GRPC_CASES, call_case, probe

pytestmark = [pytest.mark.etcd, pytest.mark.e2e, pytest.mark.timeout(120)]

FIXTURE = Path(__file__).parent / "fixtures" / "grpc_etcd.json"


@pytest.mark.parametrize("case", GRPC_CASES, ids=[c.name for c in GRPC_CASES])
def test_raw_grpc_answer_matches_etcd(compat_cluster, case):
    backend, cluster = compat_cluster
    actual = call_case(cluster.endpoints[0], case)
    expected = record_or_compare(backend, FIXTURE, case.name, actual)
    assert actual == expected, f"{backend} answered {case.name} unlike etcd"
    # Every error above must leave the member serving.
    assert probe(cluster.endpoints[0])["code"] == "OK"
