"""`python -m kvstore.devcluster up|status|down` and cluster/local.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore.devcluster import STATE_FILE, _pid_alive, child_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def devcluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kvstore.devcluster", *args],
        capture_output=True, text=True, timeout=120, env=child_env(),
    )  # fmt: skip


def test_up_status_down(tmp_path: Path) -> None:
    base = tmp_path / "cl"
    up = devcluster("up", "--size", "3", "--dir", str(base))
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert "etcdctl --endpoints" in up.stdout
        state = json.loads((base / STATE_FILE).read_text())
        pids = [m["pid"] for m in state["members"]]
        assert all(_pid_alive(p) for p in pids)
        st = devcluster("status", "--dir", str(base))
        assert st.returncode == 0
        assert st.stdout.count("leader") == 1 and st.stdout.count("follower") == 2
        again = devcluster("up", "--dir", str(base))
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        down = subprocess.run(
            [str(ROOT / "cluster" / "local.sh"), "down", "--dir", str(base)],
            capture_output=True, text=True, timeout=60,
            env={**child_env(), "PYTHON": sys.executable},
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert not any(_pid_alive(p) for p in pids)
    assert (base / "kv1.kvstore").is_dir()  # data kept for the next 'up'
    assert os.path.exists(base / "kv1.log")
