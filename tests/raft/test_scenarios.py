"""Transcript tests: tests/raft/scenarios/*.txt replayed against their recorded output.

Regenerate after an intended behaviour change with
`RAFT_REGEN=1 pytest tests/raft/test_scenarios.py` and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .scenario import run_script

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.txt"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_transcript(path: Path) -> None:
    text = path.read_text()
    got = run_script(text)
    if os.environ.get("RAFT_REGEN"):
        path.write_text(got)
        return
    assert got == text, f"transcript of {path.name} changed; RAFT_REGEN=1 to accept"
