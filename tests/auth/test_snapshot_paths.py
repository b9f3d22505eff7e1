"""The auth state rides every path the replicated state takes: snapshot
install on a lagging follower (the reloader hook reloads it), `snapshot save`
+ `snapshot restore`, and a restart (test_store.py). Nothing auth-specific is
needed in those paths: they copy the replicated `meta` records, auth/* included."""

from __future__ import annotations

from pathlib import Path

from kvstore.maintenance.backup import write_backup
from kvstore.maintenance.snapshot_install import SnapshotInstaller
from kvstore.pb import auth_pb2, rpc_pb2
from kvstore.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from kvstore.server.config import NodeConfig
from kvstore.server.datadir import open_data_dir
from kvstore.server.restore import restore_data_dir
from kvstore.storage.snapshot_spool import FILE_PREFIX

from .conftest import Member

RW = auth_pb2.Permission.READWRITE
PEER = "http://127.0.0.1:23999"


def _leader(path: Path) -> Member:
    m = Member(path)
    m.setup_root()
    m.role_add("app")
    m.grant("app", RW, b"/app/", b"/app0")
    m.user_add("alice")
    m.grant_role("alice", "app")
    m.enable()
    return m


def test_snapshot_install_carries_and_reloads_auth(tmp_path: Path) -> None:
    leader = _leader(tmp_path / "leader")
    follower = Member(tmp_path / "follower")
    follower.user_add("stale")  # replaced by the install
    invalidated: list[str] = []
    follower.auth.on_user_invalidated(invalidated.append)
    spool = tmp_path / "spool"
    spool.mkdir()
    path = spool / "recv-50-1-1.snap"
    write_backup(leader.backend, path)
    snap = Snapshot(SnapshotMetadata(50, 3, ConfState((1, 2))), FILE_PREFIX + str(path).encode())
    # The reload hook the node registers: memory follows the installed state.
    installer = SnapshotInstaller(
        follower.backend, [lambda _snap: follower.auth.load(follower.backend)]
    )
    installer.install(snap, None, HardState(1, 0, 1))
    assert follower.auth.dump() == leader.auth.dump()
    assert follower.auth.user("stale") is None
    assert invalidated == ["stale"]  # its tokens die; nobody else's
    follower.reopen()
    assert follower.auth.dump() == leader.auth.dump()
    assert follower.auth.enabled
    leader.backend.close()
    follower.backend.close()


def test_snapshot_save_and_restore_carry_auth(tmp_path: Path) -> None:
    leader = _leader(tmp_path / "leader")
    snap = tmp_path / "backup.snap"
    write_backup(leader.backend, snap)
    target = tmp_path / "restored"
    restore_data_dir(
        str(snap), data_dir=str(target), name="r1", initial_cluster=f"r1={PEER}",
        initial_cluster_token="t", initial_advertise_peer_urls=(PEER,),
    )  # fmt: skip
    cfg = NodeConfig(
        name="r1", data_dir=str(target), initial_advertise_peer_urls=(PEER,),
        initial_cluster=f"r1={PEER}", initial_cluster_token="t",
    ).validate()  # fmt: skip
    opened = open_data_dir(cfg)
    try:
        from kvstore.auth import AuthStore

        restored = AuthStore()
        restored.load(opened.backend)
        assert restored.dump() == leader.auth.dump()
        assert restored.user_get(rpc_pb2.AuthUserGetRequest(name="alice")).roles == ["app"]
    finally:
        opened.close()
        leader.backend.close()
