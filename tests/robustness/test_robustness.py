"""Robustness: real 3-member clusters under traffic and faults, every history
checked for linearizability, watch guarantees and lease bounds.

The default run is one short run (~60 s) with a few fault kinds (network
partitions included when namespaces are available here, as root); the full
matrix is behind `-m slow`. Each run prints its seed; set
KVSTORE_ROBUSTNESS_SEED to replay one. On failure the run's directory (the
history, each member's log, the report) is kept and its path printed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.devcluster import child_env
from tests.robustness import netns
from tests.robustness.history import History, check
from tests.robustness.runner import FAILPOINT_SPECS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROCESS_FAULTS = ["kill", "stop", "failpoint", "membership"]
NETWORK_FAULTS = ["partition_leader", "partition_minority", "bridge", "loss"]
_NETNS_REASON = netns.unavailable_reason()


def _seed() -> int:
    env = os.environ.get("KVSTORE_ROBUSTNESS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 1 << 31)


@pytest.fixture(scope="module")
def net() -> Iterator[netns.Net | None]:
    if _NETNS_REASON is not None:
        yield None
        return
    n = netns.Net.create(3)
    try:
        yield n
    finally:
        n.destroy()


def robustness_run(
    faults: list[str],
    duration_s: float,
    net: netns.Net | None,
    seed: int | None = None,
    failpoint_specs: list[str] | None = None,
    stale_reads: bool = False,
) -> dict:
    seed = _seed() if seed is None else seed
    out = Path(tempfile.mkdtemp(prefix=f"kvstore-robustness-{seed}-"))
    print(f"\nrobustness run: seed {seed}, faults {faults}, {duration_s:.0f}s, dir {out}")
    cfg = {
        "seed": seed,
        "duration_s": duration_s,
        "faults": faults,
        "out_dir": str(out),
        "netns_members": net.members if net else None,
        "member_ips": net.member_ips if net else None,
        **({"failpoint_specs": failpoint_specs} if failpoint_specs else {}),
        "stale_reads": stale_reads,
    }
    (out / "config.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "tests.robustness.runner", str(out / "config.json")]
    if net is not None:
        cmd = ["ip", "netns", "exec", net.client, *cmd]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=duration_s + 300
    )
    keep = True
    try:
        assert proc.returncode == 0, f"runner failed:\n{proc.stderr[-4000:]}"
        report = json.loads((out / "report.json").read_text())
        history = History.load(out / "history.json")
        result = check(history)
        summary = {**report, **result.stats, "anomalies": len(result.anomalies)}
        print("robustness report:", json.dumps(summary))
        (out / "check.json").write_text(json.dumps({**summary, "detail": result.anomalies}))
        assert report.get("watches_caught_up"), "watches did not catch up with the final revision"
        hashes = report.get("hash_kv", {})
        assert len(hashes) == 3 and len(set(hashes.values())) == 1, f"members diverge: {hashes}"
        assert result.stats["checked_operations"] > 100, "too little traffic to judge"
        if stale_reads:  # the harness's self-test: the lie must be caught
            assert any("linearizab" in a or "revision" in a for a in result.anomalies)
            keep = False
            return summary
        assert not result.anomalies, (
            f"seed {seed}: {len(result.anomalies)} anomalies (history kept in {out}):\n"
            + "\n".join(result.anomalies[:20])
        )
        keep = False
        return summary
    finally:
        if keep:
            print(f"robustness run kept for inspection: {out}")
        else:
            shutil.rmtree(out, ignore_errors=True)


def test_short_run(net: netns.Net | None) -> None:
    """~60 s: kill -9, SIGSTOP/SIGCONT, failpoint restarts, and (in
    namespaces) isolating the leader while clients still reach it."""
    faults = ["kill", "stop", "failpoint"] + (["partition_leader"] if net else [])
    if net is None:
        print(f"network faults skipped: {_NETNS_REASON}")
    robustness_run(faults, 60.0, net)


@pytest.mark.slow
@pytest.mark.parametrize("fault", PROCESS_FAULTS + NETWORK_FAULTS)
def test_single_fault_kind(fault: str, net: netns.Net | None) -> None:
    if fault in NETWORK_FAULTS and net is None:
        pytest.skip(f"network faults: {_NETNS_REASON}")
    robustness_run([fault], 90.0, net)


@pytest.mark.slow
def test_all_faults_long(net: netns.Net | None) -> None:
    robustness_run(PROCESS_FAULTS + (NETWORK_FAULTS if net else []), 300.0, net)


@pytest.mark.slow
@pytest.mark.parametrize("spec", FAILPOINT_SPECS)
def test_each_failpoint(spec: str, net: netns.Net | None) -> None:
    """Restart members with one failpoint spec, over and over, under traffic."""
    summary = robustness_run(["failpoint"], 45.0, net, failpoint_specs=[spec])
    print(f"{spec}: fired {summary['failpoints_fired']} of {summary['faults'].get('failpoint', 0)}")


@pytest.mark.slow
def test_harness_detects_stale_reads(net: netns.Net | None) -> None:
    """Self-test: clients send their "linearizable" reads as serializable
    ones while members are cut off; the checkers must report it."""
    if net is None:
        pytest.skip(f"needs partitions: {_NETNS_REASON}")
    robustness_run(["partition_minority", "partition_leader"], 40.0, net, stale_reads=True)
