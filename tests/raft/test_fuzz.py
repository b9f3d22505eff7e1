"""Randomized fault schedules (see fuzz.py): safety after every round, liveness after heal.

Default: 200 seeds in blocks of 50. More: `pytest tests/raft/test_fuzz.py --raft-seeds 5000`
or RAFT_SEEDS=5000. A failure names its seed; rerun one with `--raft-seed-start S --raft-seeds 1`.
"""

from __future__ import annotations

from .fuzz import run_schedule


def test_fault_schedules_keep_safety_and_recover(raft_seed_block: tuple[int, int]) -> None:
    lo, hi = raft_seed_block
    total_applied = 0
    for seed in range(lo, hi):
        try:
            result = run_schedule(seed)
        except AssertionError as e:
            raise AssertionError(f"fault schedule failed for seed {seed}: {e}") from e
        assert result.ticks_to_recover <= 150
        total_applied += result.applied
    assert total_applied > 0  # the schedules did replicate something
