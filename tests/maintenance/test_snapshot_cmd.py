"""`kvstore snapshot restore|status` command line (offline, no server)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from kvstore.cli.snapshot_cmd import snapshot
from kvstore.maintenance.backup import write_backup
from kvstore.server.datadir import IDENTITY_FILE

PEER = "http://127.0.0.1:23998"


def _backup(member, tmp_path: Path) -> Path:
    member.fill(100)
    path = tmp_path / "backup.db"
    write_backup(member.backend, path)
    return path


def test_restore_and_status(member, tmp_path: Path) -> None:
    path = _backup(member, tmp_path)
    target = tmp_path / "new.kvstore"
    args = [
        "restore", str(path), "--data-dir", str(target), "--name", "n1",
        "--initial-cluster", f"n1={PEER}", "--initial-cluster-token", "tok",
        "--initial-advertise-peer-urls", PEER,
    ]  # fmt: skip
    result = CliRunner().invoke(snapshot, args)
    assert result.exit_code == 0, result.output
    assert "restored snapshot" in result.output
    assert (target / IDENTITY_FILE).exists()
    again = CliRunner().invoke(snapshot, args)
    assert again.exit_code == 1 and "exists" in again.output

    status = CliRunner().invoke(snapshot, ["status", str(path), "-w", "json"])
    assert status.exit_code == 0, status.output
    info = json.loads(status.output)
    assert info["revision"] == member.store.current_revision
    assert info["totalKey"] == len(list(member.backend.iterate("kv")))
    assert info["totalSize"] == path.stat().st_size


def test_corrupt_file_is_one_line_error(member, tmp_path: Path) -> None:
    path = _backup(member, tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    result = CliRunner().invoke(snapshot, ["status", str(path)])
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output and "Traceback" not in result.output
