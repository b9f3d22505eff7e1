"""Snapshot install on a follower: bounded memory, atomic switch, crash recovery.

The installer builds the received state as the backend's next state
generation in bounded batches and switches with one synced write; these tests
check the resulting state, that no batch holds the whole state, and that a
crash (a real `os._exit` in a child process) or a failure at every step of
the switch leaves either the complete old or the complete new state once the
database is reopened through `Backend.open` (the data dir's startup path).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rocksdict

from kvstore.maintenance.backup import BackupError, write_backup
from kvstore.maintenance.snapshot_install import SnapshotInstaller
from kvstore.mvcc import MvccStore
from kvstore.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from kvstore.storage import backend as backend_mod
from kvstore.storage.backend import Backend, StagedState
from kvstore.storage.raft_log import RocksLogStorage
from kvstore.storage.snapshot_spool import FILE_PREFIX

REPO = Path(__file__).resolve().parents[2]
MEMBERS = json.dumps({"members": [{"id": 1}, {"id": 2}], "removed": []}).encode()
BATCH_BYTES = 16 * 1024
OLD_HS = HardState(2, 1, 10)
NEW_HS = HardState(5, 0, 900)
INDEX, TERM = 900, 4


def _leader_file(member, spool: Path, n: int = 4000) -> Path:
    member.fill(n)
    member.set_meta(b"applied_index", INDEX.to_bytes(8, "big"))
    member.set_meta(b"applied_term", TERM.to_bytes(8, "big"))
    member.set_meta(b"members", MEMBERS)
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"recv-{INDEX}-1-1.snap"
    write_backup(member.backend, path)
    return path


def _old_follower(other) -> None:
    other.fill(60, seed=99)
    other.set_meta(b"member_id", (2).to_bytes(8, "big"))
    other.set_meta(b"applied_index", (10).to_bytes(8, "big"))
    RocksLogStorage(other.backend).save(
        OLD_HS, [Entry(2, i, data=b"old") for i in range(1, 11)], None
    )


def _snapshot(path: Path) -> Snapshot:
    md = SnapshotMetadata(INDEX, TERM, ConfState((1, 2)))
    return Snapshot(md, FILE_PREFIX + str(path).encode())


def _state(backend: Backend) -> tuple:
    """Everything the install replaces: MVCC hash/revision, meta, raft log."""
    store = MvccStore(backend)
    flog = RocksLogStorage(backend)
    meta = {bytes(k): bytes(v) for k, v in backend.iterate("meta")}
    leases = list(backend.iterate("lease"))
    raft = (flog.first_index(), flog.last_index(), flog.hard_state, flog.snapshot().metadata)
    return store.hash_kv(0), store.current_revision, meta, leases, raft


def _families_on_disk(path: Path) -> list[str]:
    return sorted(rocksdict.Rdict.list_cf(str(path), rocksdict.Options(raw_mode=True)))


def test_install_builds_state_in_bounded_batches(member, other, tmp_path, monkeypatch) -> None:
    snap_file = _leader_file(member, tmp_path / "spool")
    _old_follower(other)
    flushed: list[tuple[int, int]] = []  # (records, bytes) of every staged batch written
    real_flush, real_switch = StagedState._flush, StagedState._write_switch

    def flush(self: StagedState) -> None:
        flushed.append((len(self._batch), self._batch.size_bytes()))
        real_flush(self)

    def switch(self: StagedState, batch) -> None:
        flushed.append((len(batch), batch.size_bytes()))
        real_switch(self, batch)

    monkeypatch.setattr(StagedState, "_flush", flush)
    monkeypatch.setattr(StagedState, "_write_switch", switch)
    reloaded: list[int] = []
    installer = SnapshotInstaller(
        other.backend, [lambda s: reloaded.append(s.metadata.index)], batch_bytes=BATCH_BYTES
    )
    installer.install(_snapshot(snap_file), NEW_HS, OLD_HS)

    assert reloaded == [INDEX]
    assert not snap_file.exists()  # spool cleaned
    records = sum(n for n, _ in flushed)
    assert records > 4000  # kv revisions + meta + raft state went through these batches
    # Never one batch with everything: each is about BATCH_BYTES (one record past it).
    assert len(flushed) == installer.last_batches > 10
    assert max(size for _, size in flushed) == installer.last_max_batch_bytes
    assert installer.last_max_batch_bytes < BATCH_BYTES + 1024
    assert max(n for n, _ in flushed) < records // 5

    # The live backend serves the new state at once (same object for every holder).
    store = MvccStore(other.backend)
    assert store.hash_kv(0) == member.store.hash_kv(0)
    assert store.current_revision == member.store.current_revision
    assert other.backend.get("meta", b"member_id") == (2).to_bytes(8, "big")  # local key kept
    assert other.backend.get("meta", b"applied_index") == INDEX.to_bytes(8, "big")
    assert other.backend.generation == 1
    other.reopen()
    flog = RocksLogStorage(other.backend)
    assert (flog.first_index(), flog.last_index()) == (INDEX + 1, INDEX)
    assert flog.hard_state == NEW_HS
    assert flog.snapshot().metadata == SnapshotMetadata(INDEX, TERM, ConfState((1, 2)))
    assert other.store.hash_kv(0) == member.store.hash_kv(0)
    other.close()
    # The old generation's families are gone.
    assert _families_on_disk(other.path) == sorted(
        ["default", "kv@g1", "meta@g1", "lease@g1", "raft_log", "raft_state"]
    )


def test_second_install_and_reads_taken_before_the_switch(member, other, tmp_path) -> None:
    snap_file = _leader_file(member, tmp_path / "spool", n=800)
    _old_follower(other)
    old_hash = MvccStore(other.backend).hash_kv(0)
    view = other.backend.snapshot()
    it = other.backend.iterate("kv")
    first = next(it)
    SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES).install(
        _snapshot(snap_file), NEW_HS, OLD_HS
    )
    # Views taken before the switch keep reading the old (dropped) generation.
    assert view.get("meta", b"applied_index") == (10).to_bytes(8, "big")
    assert sum(1 for _ in view.iterate("kv")) > 0
    assert next(it)[0] > first[0]
    view.close()
    del it
    assert MvccStore(other.backend).hash_kv(0) != old_hash

    member.put(b"after", b"second")
    member.set_meta(b"applied_index", (INDEX + 50).to_bytes(8, "big"))
    second = tmp_path / "spool" / f"recv-{INDEX + 50}-1-2.snap"
    write_backup(member.backend, second)
    md = SnapshotMetadata(INDEX + 50, TERM, ConfState((1, 2)))
    SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES).install(
        Snapshot(md, FILE_PREFIX + str(second).encode()), None, NEW_HS
    )
    assert other.backend.generation == 2
    other.reopen()
    assert other.backend.generation == 2
    assert other.get(b"after") == b"second"
    assert other.store.hash_kv(0) == member.store.hash_kv(0)
    assert RocksLogStorage(other.backend).first_index() == INDEX + 51


def test_bad_file_touches_nothing(member, other, tmp_path) -> None:
    snap_file = _leader_file(member, tmp_path / "spool", n=300)
    _old_follower(other)
    before = _state(other.backend)
    data = bytearray(snap_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap_file.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="cannot install"):
        SnapshotInstaller(other.backend).install(_snapshot(snap_file), NEW_HS, OLD_HS)
    assert _state(other.backend) == before
    assert other.backend.generation == 0
    assert "kv@g1" not in _families_on_disk_live(other.backend)


def _families_on_disk_live(backend: Backend) -> list[str]:
    return sorted(rocksdict.Rdict.list_cf(backend.path, rocksdict.Options(raw_mode=True)))


def test_failure_while_building_keeps_old_state_and_allows_retry(
    member, other, tmp_path, monkeypatch
) -> None:
    snap_file = _leader_file(member, tmp_path / "spool", n=2000)
    _old_follower(other)
    before = _state(other.backend)
    real = backend_mod.StagedState._flush

    def failing_flush(self: StagedState) -> None:
        if self.batches_written >= 3:
            raise BackupError("record truncated")  # e.g. the file changed under us
        real(self)

    monkeypatch.setattr(StagedState, "_flush", failing_flush)
    with pytest.raises(RuntimeError, match="cannot install"):
        SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES).install(
            _snapshot(snap_file), NEW_HS, OLD_HS
        )
    assert _state(other.backend) == before
    assert "kv@g1" not in _families_on_disk_live(other.backend)  # half-built state dropped
    monkeypatch.setattr(StagedState, "_flush", real)
    SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES).install(
        _snapshot(snap_file), NEW_HS, OLD_HS
    )
    assert MvccStore(other.backend).hash_kv(0) == member.store.hash_kv(0)


def test_failed_switch_write_refuses_more_installs_until_reopen(
    member, other, tmp_path, monkeypatch
) -> None:
    snap_file = _leader_file(member, tmp_path / "spool", n=500)
    _old_follower(other)
    before = _state(other.backend)

    def failing_switch(self: StagedState, batch) -> None:
        raise OSError("fsync failed")

    monkeypatch.setattr(StagedState, "_write_switch", failing_switch)
    installer = SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES)
    with pytest.raises(OSError, match="fsync failed"):
        installer.install(_snapshot(snap_file), NEW_HS, OLD_HS)
    assert _state(other.backend) == before
    with pytest.raises(RuntimeError, match="reopen"):
        installer.install(_snapshot(snap_file), NEW_HS, OLD_HS)
    other.reopen()  # recovery: the generation on disk is still 0
    assert _state(other.backend) == before
    assert "kv@g1" not in _families_on_disk_live(other.backend)


# --- crash at each step: a child process dies with os._exit at that point ---------

_CHILD = r"""
import os, sys
from kvstore.storage import backend as bmod
from kvstore.maintenance.snapshot_install import SnapshotInstaller
from kvstore.storage.snapshot_spool import FILE_PREFIX
from kvstore.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata

db, snap_file, step = sys.argv[1:4]
CRASH = 17

def die(*args, **kwargs):
    os._exit(CRASH)

if step == "building":
    real = bmod.StagedState._flush
    def flush(self):
        real(self)
        if self.batches_written >= 3:
            die()
    bmod.StagedState._flush = flush
elif step == "before_switch_write":
    bmod.StagedState._write_switch = die
elif step == "after_switch_write":
    real = bmod.StagedState._write_switch
    def switch(self, batch):
        real(self, batch)
        die()
    bmod.StagedState._write_switch = switch
elif step == "before_drop":
    bmod.Backend._drop_families = die
elif step == "before_reload":
    pass
b = bmod.Backend.open(db)
md = SnapshotMetadata(900, 4, ConfState((1, 2)))
snap = Snapshot(md, FILE_PREFIX + snap_file.encode())
reloaders = [die] if step == "before_reload" else []
SnapshotInstaller(b, reloaders, batch_bytes=16384).install(
    snap, HardState(5, 0, 900), HardState(2, 1, 10)
)
b.close()
"""


@pytest.mark.parametrize(
    ("step", "expect"),
    [
        ("building", "old"),
        ("before_switch_write", "old"),
        ("after_switch_write", "new"),
        ("before_drop", "new"),
        ("before_reload", "new"),
        ("none", "new"),
    ],
)
def test_crash_at_each_step_leaves_old_or_new_state(
    member, other, tmp_path, step: str, expect: str
) -> None:
    snap_file = _leader_file(member, tmp_path / "spool", n=2000)
    _old_follower(other)
    old = _state(other.backend)
    other.close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(other.path), str(snap_file), step],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == (0 if step == "none" else 17), proc.stderr.decode()[-2000:]

    backend = Backend.open(other.path)  # the startup path: recovery runs here
    try:
        state = _state(backend)
        if expect == "old":
            assert state == old
            assert backend.generation == 0
        else:
            hash_kv, rev, meta, _, raft = state
            assert (hash_kv, rev) == (member.store.hash_kv(0), member.store.current_revision)
            assert meta[b"member_id"] == (2).to_bytes(8, "big")
            assert meta[b"applied_index"] == INDEX.to_bytes(8, "big")
            assert raft == (
                INDEX + 1,
                INDEX,
                NEW_HS,
                SnapshotMetadata(INDEX, TERM, ConfState((1, 2))),
            )
            assert backend.generation == 1
    finally:
        backend.close()
    # Only one generation of the state families survives recovery.
    gen = "" if expect == "old" else "@g1"
    assert _families_on_disk(other.path) == sorted(
        ["default", f"kv{gen}", f"meta{gen}", f"lease{gen}", "raft_log", "raft_state"]
    )


@pytest.mark.parametrize(("step", "expect"), [("building", "old"), ("before_drop", "new")])
def test_crash_then_restart_through_the_data_dir(member, tmp_path, step: str, expect: str) -> None:
    from kvstore.pb import rpc_pb2
    from kvstore.server.config import NodeConfig
    from kvstore.server.datadir import open_data_dir
    from kvstore.server.membership import MEMBERS_META_KEY

    peer = "http://127.0.0.1:23998"
    cfg = NodeConfig(
        name="f1",
        data_dir=str(tmp_path / "dd"),
        initial_advertise_peer_urls=(peer,),
        initial_cluster=f"f1={peer}",
        initial_cluster_token="install-crash",
    ).validate()
    opened = open_data_dir(cfg)
    try:
        members = opened.backend.get("meta", MEMBERS_META_KEY)
        batch = opened.store.begin_batch()
        batch.put(rpc_pb2.PutRequest(key=b"old-key", value=b"old"))
        batch.commit(sync=True)
        old_hash = opened.store.hash_kv(0)
    finally:
        opened.close()
    member.fill(1500)
    member.set_meta(b"applied_index", INDEX.to_bytes(8, "big"))
    member.set_meta(b"applied_term", TERM.to_bytes(8, "big"))
    member.set_meta(MEMBERS_META_KEY, bytes(members))
    snap_file = tmp_path / "dd" / "snap" / f"recv-{INDEX}-1-1.snap"
    snap_file.parent.mkdir()
    write_backup(member.backend, snap_file)

    env = dict(os.environ, PYTHONPATH=str(REPO))
    db = tmp_path / "dd" / "db"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db), str(snap_file), step],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]

    opened = open_data_dir(cfg)
    try:
        assert not opened.is_new
        assert opened.member_id == cfg.member_id and opened.cluster_id == cfg.cluster_id
        assert [m.name for m in opened.members.all()] == ["f1"]
        if expect == "old":
            assert opened.store.hash_kv(0) == old_hash
            assert opened.log_storage.first_index() == 1
        else:
            assert opened.applied_index == INDEX
            assert opened.store.hash_kv(0) == member.store.hash_kv(0)
            assert opened.log_storage.first_index() == INDEX + 1
    finally:
        opened.close()


# --- staging off the loop (SnapshotInstaller.prepare, awaited by the receiver) -------


def test_prepared_install_only_switches(member, other, tmp_path, monkeypatch) -> None:
    from kvstore.maintenance import snapshot_install

    snap_file = _leader_file(member, tmp_path / "spool", n=2000)
    _old_follower(other)
    before = _state(other.backend)
    installer = SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES)
    asyncio.run(asyncio.wait_for(installer.prepare(snap_file), 60))
    # Staged, but nothing visible yet.
    assert _state(other.backend) == before
    assert "kv@g1" in _families_on_disk_live(other.backend)

    def no_reading(*args, **kwargs):
        raise AssertionError("install re-read a prepared file")

    monkeypatch.setattr(snapshot_install, "read_records", no_reading)
    installer.install(_snapshot(snap_file), NEW_HS, OLD_HS)
    assert installer.prepared_installs == 1
    assert installer.last_batches > 10  # built in bounded batches by the worker
    assert MvccStore(other.backend).hash_kv(0) == member.store.hash_kv(0)
    flog = RocksLogStorage(other.backend)
    assert (flog.first_index(), flog.hard_state) == (INDEX + 1, NEW_HS)
    assert other.backend.get("meta", b"member_id") == (2).to_bytes(8, "big")


def test_install_of_another_file_discards_the_prepared_one(member, other, tmp_path) -> None:
    first = _leader_file(member, tmp_path / "spool", n=600)
    member.put(b"later", b"yes")
    second = tmp_path / "spool" / f"recv-{INDEX}-1-2.snap"
    write_backup(member.backend, second)
    _old_follower(other)
    installer = SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES)
    asyncio.run(asyncio.wait_for(installer.prepare(first), 60))
    installer.install(_snapshot(second), NEW_HS, OLD_HS)
    assert installer.prepared_installs == 0
    assert MvccStore(other.backend).hash_kv(0) == member.store.hash_kv(0)
    assert other.backend.generation == 1
    other.reopen()
    assert other.get(b"later") == b"yes"
    assert other.store.hash_kv(0) == member.store.hash_kv(0)
    other.close()
    # One generation left: the prepared build was dropped, then rebuilt from `second`.
    assert _families_on_disk(other.path) == sorted(
        ["default", "kv@g1", "meta@g1", "lease@g1", "raft_log", "raft_state"]
    )


def test_stop_drops_prepared_state_and_bad_files_are_not_prepared(member, other, tmp_path) -> None:
    snap_file = _leader_file(member, tmp_path / "spool", n=600)
    _old_follower(other)
    before = _state(other.backend)
    installer = SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES)

    async def prepare_then_stop() -> None:
        await installer.prepare(snap_file)
        await installer.stop()
        await installer.prepare(snap_file)  # stopped: does nothing

    asyncio.run(asyncio.wait_for(prepare_then_stop(), 60))
    assert "kv@g1" not in _families_on_disk_live(other.backend)
    assert _state(other.backend) == before

    bad = tmp_path / "spool" / "recv-901-1-3.snap"
    data = bytearray(snap_file.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    fresh = SnapshotInstaller(other.backend, batch_bytes=BATCH_BYTES)
    asyncio.run(asyncio.wait_for(fresh.prepare(bad), 60))  # logged, not raised
    assert "kv@g1" not in _families_on_disk_live(other.backend)
    with pytest.raises(RuntimeError, match="cannot install"):
        fresh.install(_snapshot(bad), NEW_HS, OLD_HS)
    assert _state(other.backend) == before
    # And the good file still installs (prepared after the failure).
    asyncio.run(asyncio.wait_for(fresh.prepare(snap_file), 60))
    fresh.install(_snapshot(snap_file), NEW_HS, OLD_HS)
    assert fresh.prepared_installs == 1
    assert MvccStore(other.backend).hash_kv(0) == member.store.hash_kv(0)


def test_receiver_prepares_before_raft_sees_the_message(member, tmp_path) -> None:
    from kvstore.maintenance.backup import verify_file
    from kvstore.pb import raftpb_pb2
    from kvstore.raft.types import Message, MessageType
    from kvstore.transport import codec
    from kvstore.transport.snapshot_recv import SnapshotReceiver

    snap_file = _leader_file(member, tmp_path / "leader", n=200)
    events: list[tuple[str, object]] = []

    async def prepare(path: Path) -> None:
        events.append(("prepare", path))

    receiver = SnapshotReceiver(
        tmp_path / "spool",
        cluster_id=7,
        deliver=lambda msgs: events.append(("deliver", msgs[0].snapshot.data)),
        verify=verify_file,
        prepare=prepare,
    )
    md = SnapshotMetadata(INDEX, TERM, ConfState((1, 2)))
    msg = Message(MessageType.SNAP, to=2, sender=1, term=5, snapshot=Snapshot(md, b""))

    async def chunks():
        yield raftpb_pb2.SnapshotChunk(cluster_id=7, message=codec.message_to_pb(msg))
        data = snap_file.read_bytes()
        for i in range(0, len(data), 4096):
            yield raftpb_pb2.SnapshotChunk(cluster_id=7, data=data[i : i + 4096])
        yield raftpb_pb2.SnapshotChunk(cluster_id=7, last=True)

    ack = asyncio.run(asyncio.wait_for(receiver.handle(chunks(), None), 60))
    assert ack.bytes_received == snap_file.stat().st_size
    (kind1, path), (kind2, data) = events
    assert (kind1, kind2) == ("prepare", "deliver")
    assert data == FILE_PREFIX + str(path).encode()
    assert Path(path).read_bytes() == snap_file.read_bytes()
