"""Raft snapshot transfer: leader view -> chunked stream -> atomic install."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import grpc
import pytest

from kvstore.maintenance.backup import verify_file, write_backup
from kvstore.maintenance.snapshot_install import (
    BackupSnapshotSource,
    SnapshotInstaller,
    conf_state_from_members,
)
from kvstore.pb import raftpb_pb2_grpc
from kvstore.raft.types import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from kvstore.storage.raft_log import RocksLogStorage
from kvstore.storage.snapshot_spool import FILE_PREFIX, clean_spool
from kvstore.testing.waiting import async_wait_until
from kvstore.transport.peer_client import PeerChannels
from kvstore.transport.snapshot_recv import SnapshotReceiver
from kvstore.transport.snapshot_send import SnapshotSender

CLUSTER = 0xC1
MEMBERS = json.dumps(
    {"members": [{"id": 1}, {"id": 2}, {"id": 3, "is_learner": True}], "removed": []}
).encode()


def _leader_state(member, n: int) -> None:
    member.fill(n)
    member.set_meta(b"applied_index", (900).to_bytes(8, "big"))
    member.set_meta(b"applied_term", (4).to_bytes(8, "big"))
    member.set_meta(b"members", MEMBERS)


def test_conf_state_from_members() -> None:
    assert conf_state_from_members(MEMBERS) == ConfState((1, 2), (3,))
    assert conf_state_from_members(b"") == ConfState()


class _Peer(raftpb_pb2_grpc.RaftPeerServicer):
    def __init__(self, receiver: SnapshotReceiver) -> None:
        self._r = receiver

    async def SendSnapshot(self, request_iterator, context):  # noqa: N802
        return await self._r.handle(request_iterator, context)


async def _transfer(leader, spool: Path, *, cluster: int = CLUSTER) -> tuple[list, list, object]:
    delivered: list[Message] = []
    reports: list[tuple[int, bool]] = []
    receiver = SnapshotReceiver(
        spool / "recv", cluster_id=CLUSTER, deliver=delivered.extend, verify=verify_file
    )
    server = grpc.aio.server()
    raftpb_pb2_grpc.add_RaftPeerServicer_to_server(_Peer(receiver), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        sender = SnapshotSender(
            PeerChannels(credentials=None),
            BackupSnapshotSource(leader.backend),
            spool / "send",
            cluster_id=cluster,
            self_id=1,
            peer_address=lambda pid: f"127.0.0.1:{port}",
            report=lambda pid, ok: reports.append((pid, ok)),
            chunk_bytes=64 * 1024,
        )
        stale = Snapshot(SnapshotMetadata(500, 3, ConfState((1, 2))), b"")
        sender.send(Message(MessageType.SNAP, to=2, sender=1, term=5, snapshot=stale))
        sender.send(Message(MessageType.SNAP, to=2, sender=1, term=5, snapshot=stale))  # dup
        await async_wait_until(lambda: reports, timeout=30, what="a snapshot report")
        await sender.stop()
        return delivered, reports, sender
    finally:
        await server.stop(0)


def test_transfer_then_install_replaces_state(member, other, tmp_path: Path) -> None:
    _leader_state(member, 3000)
    # The follower has older, different state and a raft log.
    other.fill(50, seed=99)
    flog = RocksLogStorage(other.backend)
    flog.save(HardState(2, 1, 10), [Entry(2, i, data=b"old") for i in range(1, 11)], None)

    delivered, reports, sender = asyncio.run(
        asyncio.wait_for(_transfer(member, tmp_path / "spool"), 60)
    )
    assert reports == [(2, True)]  # one transfer despite the duplicate send
    assert sender.chunks_sent == -(-sender.last_bytes // (64 * 1024)) > 2  # really chunked
    (msg,) = delivered
    md = msg.snapshot.metadata
    # Metadata rewritten to the view's applied index/term and membership.
    assert (md.index, md.term, md.conf_state) == (900, 4, ConfState((1, 2), (3,)))
    assert msg.term == 5 and msg.sender == 1
    assert msg.snapshot.data.startswith(FILE_PREFIX)

    spool = Path(msg.snapshot.data[len(FILE_PREFIX) :].decode()).parent
    stale = spool / "recv-5-1-99.snap"  # an older one Raft had rejected
    stale.write_bytes(b"x")
    newer = spool / "recv-950-1-98.snap"  # a newer one still waiting: kept
    newer.write_bytes(b"y")
    reloaded: list[int] = []
    installer = SnapshotInstaller(other.backend, [lambda s: reloaded.append(s.metadata.index)])
    installer.install(msg.snapshot, HardState(5, 0, 900), flog.hard_state)
    assert reloaded == [900]
    assert not Path(msg.snapshot.data[len(FILE_PREFIX) :].decode()).exists()
    assert not stale.exists() and newer.exists()
    other.reopen()
    assert other.store.hash_kv(0) == member.store.hash_kv(0)
    assert other.store.current_revision == member.store.current_revision
    flog = RocksLogStorage(other.backend)
    assert (flog.first_index(), flog.last_index()) == (901, 900)
    assert flog.snapshot().metadata.index == 900
    assert flog.hard_state == HardState(5, 0, 900)
    assert flog.initial_state()[1] == ConfState((1, 2), (3,))


def test_cluster_mismatch_reports_failure(member, tmp_path: Path) -> None:
    _leader_state(member, 10)
    delivered, reports, _ = asyncio.run(
        asyncio.wait_for(_transfer(member, tmp_path / "spool", cluster=0xBAD), 60)
    )
    assert delivered == [] and reports == [(2, False)]


def test_corrupt_file_is_not_installed_and_old_state_stays(member, other, tmp_path: Path) -> None:
    _leader_state(member, 100)
    other.fill(30, seed=5)
    before = other.store.hash_kv(0)
    path = tmp_path / "x.snap"
    write_backup(member.backend, path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    snap = Snapshot(SnapshotMetadata(900, 4, ConfState((1,))), FILE_PREFIX + str(path).encode())
    with pytest.raises(RuntimeError, match="cannot install"):
        SnapshotInstaller(other.backend).install(snap, None, HardState(1, 0, 0))
    other.reopen()
    assert other.store.hash_kv(0) == before
    with pytest.raises(RuntimeError, match="no state file"):
        SnapshotInstaller(other.backend).install(
            Snapshot(snap.metadata, b""), None, HardState(1, 0, 0)
        )


def test_clean_spool_removes_leftovers(tmp_path: Path) -> None:
    spool = tmp_path / "snap"
    spool.mkdir()
    for name in ("recv-1-2-3.tmp", "recv-9-2-4.snap", "send-2-1.snap", "keep.txt"):
        (spool / name).write_bytes(b"x")
    clean_spool(spool)
    assert sorted(p.name for p in spool.iterdir()) == ["keep.txt"]
    clean_spool(tmp_path / "missing")  # no spool yet: nothing to do


def test_thread_work_drain_waits_for_running_threads() -> None:
    import threading

    from kvstore.maintenance.snapshot_install import ThreadWork

    async def scenario() -> bool:
        gate = threading.Event()
        finished = threading.Event()

        def work() -> None:
            gate.wait(10)
            finished.set()

        tw = ThreadWork()
        task = asyncio.create_task(tw.run(work))
        await asyncio.sleep(0)
        task.cancel()  # the caller gives up; the thread keeps running
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not finished.is_set()
        asyncio.get_running_loop().call_later(0.05, gate.set)
        await tw.drain(timeout=10)
        return finished.is_set()

    assert asyncio.run(asyncio.wait_for(scenario(), 20))
