"""Restore: a snapshot file becomes a new member's data dir the server opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.maintenance.backup import write_backup
from kvstore.pb import rpc_pb2
from kvstore.server.config import NodeConfig
from kvstore.server.datadir import open_data_dir
from kvstore.server.restore import RestoreError, restore_data_dir

PEER = "http://127.0.0.1:23999"


def _restore(snap: Path, target: Path, token: str = "restored") -> object:
    return restore_data_dir(
        str(snap),
        data_dir=str(target),
        name="r1",
        initial_cluster=f"r1={PEER}",
        initial_cluster_token=token,
        initial_advertise_peer_urls=(PEER,),
    )


def _cfg(target: Path, token: str = "restored") -> NodeConfig:
    return NodeConfig(
        name="r1",
        data_dir=str(target),
        initial_advertise_peer_urls=(PEER,),
        initial_cluster=f"r1={PEER}",
        initial_cluster_token=token,
    ).validate()


def test_restored_dir_opens_with_same_data(member, tmp_path: Path) -> None:
    model = member.fill(400)
    member.store.begin_batch()  # no-op batch: nothing pending
    snap = tmp_path / "backup.snap"
    write_backup(member.backend, snap)
    target = tmp_path / "restored"
    result = _restore(snap, target)
    cfg = _cfg(target)
    assert (result.member_id, result.cluster_id) == (cfg.member_id, cfg.cluster_id)
    opened = open_data_dir(cfg)
    try:
        assert opened.is_new  # bootstraps a new cluster on top of the data
        store = opened.store
        assert store.current_revision == member.store.current_revision
        resp = store.range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
        assert {kv.key: kv.value for kv in resp.kvs} == model
        assert store.hash_kv(0) == member.store.hash_kv(0)
        assert [m.name for m in opened.members.all()] == ["r1"]
    finally:
        opened.close()


def test_refuses_existing_data_dir(member, tmp_path: Path) -> None:
    member.fill(10)
    snap = tmp_path / "backup.snap"
    write_backup(member.backend, snap)
    target = tmp_path / "restored"
    target.mkdir()
    (target / "something").write_text("x")
    with pytest.raises(RestoreError, match="exists"):
        _restore(snap, target)
    assert (target / "something").read_text() == "x"


def test_corrupt_file_leaves_nothing(member, tmp_path: Path) -> None:
    member.fill(10)
    snap = tmp_path / "backup.snap"
    write_backup(member.backend, snap)
    raw = bytearray(snap.read_bytes())
    raw[40] ^= 1
    snap.write_bytes(bytes(raw))
    target = tmp_path / "restored"
    with pytest.raises(RestoreError, match="checksum"):
        _restore(snap, target)
    assert not target.exists()
    assert not list(tmp_path.glob("restored*"))


def test_bad_flags_are_one_line_errors(member, tmp_path: Path) -> None:
    snap = tmp_path / "backup.snap"
    write_backup(member.backend, snap)
    with pytest.raises(RestoreError, match="initial-cluster"):
        restore_data_dir(
            str(snap),
            data_dir=str(tmp_path / "x"),
            name="r1",
            initial_cluster="other=http://127.0.0.1:1",
            initial_cluster_token="t",
            initial_advertise_peer_urls=(PEER,),
        )
