"""Same etcdctl 3.4 sessions against real etcd and kvstore; outputs must match.

Each case (compat_harness.CASES) runs a fixed list of etcdctl commands and
normalises the outputs (ids, terms, sizes, ports, latencies masked;
revisions relative to the case start). The expected outputs are etcd's,
recorded in fixtures/etcdctl_etcd.json: the etcd backend re-checks them live
on every run (or rewrites them with KVSTORE_REGEN_COMPAT=1), the kvstore
backend must reproduce them byte for byte.
"""

from __future__ import annotations

import pytest
from compat_harness import CASES, FIXTURE, diff_records, record_or_compare, run_case

pytestmark = [pytest.mark.etcd, pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_etcdctl_output_matches_etcd(compat_cluster, case):
    backend, cluster = compat_cluster
    actual = run_case(cluster, case)
    expected = record_or_compare(backend, FIXTURE, case.name, actual)
    problems = diff_records(expected, actual)
    assert not problems, f"{backend} differs from etcd in case {case.name}:\n" + "\n".join(problems)
