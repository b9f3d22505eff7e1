"""MaintenanceService against a real store and a fake KvServer whose
`propose` applies the request at once (as a one-member Raft would)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kvstore import errors
from kvstore.maintenance.backup import HASH_LEN
from kvstore.maintenance.quota import NOSPACE, AlarmTable
from kvstore.maintenance.service import CachedSize, MaintenanceService
from kvstore.pb import rpc_pb2


class FakeKv:
    member_id = 0xABC

    def __init__(self, member, alarms: AlarmTable) -> None:
        self.store = member.store
        self._alarms = alarms
        self.proposed: list[str] = []

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        rev = self.store.current_revision
        return rpc_pb2.ResponseHeader(member_id=self.member_id, revision=rev)

    async def propose(self, kind: str, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        self.proposed.append(kind)
        assert kind == "alarm"
        batch = self.store.begin_batch()
        resp = self._alarms.apply_alarm(batch, req)
        batch.commit(sync=False)
        return resp


def _service(member, tmp_path: Path, quota: int) -> tuple[MaintenanceService, FakeKv, list[int]]:
    alarms = AlarmTable()
    kv = FakeKv(member, alarms)
    svc = MaintenanceService(kv, member.backend, alarms, quota_bytes=quota, spool=tmp_path / "s")
    size = [1000]
    svc.db_size = CachedSize(lambda: size[0], ttl=0)
    svc.quota._db_size = svc.db_size
    return svc, kv, size


def test_quota_exceeded_raises_alarm_then_refuses(member, tmp_path: Path) -> None:
    svc, kv, size = _service(member, tmp_path, quota=5000)

    async def scenario() -> None:
        await svc.check_write("put", rpc_pb2.PutRequest(key=b"a", value=b"x" * 100))
        assert kv.proposed == []
        size[0] = 4900
        with pytest.raises(errors.EtcdError) as exc:
            await svc.check_write("put", rpc_pb2.PutRequest(key=b"a", value=b"x" * 100))
        assert exc.value == errors.NO_SPACE()
        assert kv.proposed == ["alarm"]  # raised through "Raft" once
        assert svc.status_errors() == [f"memberID:{FakeKv.member_id} alarm:NOSPACE "]
        size[0] = 10  # even with room now, the alarm blocks writes until disarmed
        with pytest.raises(errors.EtcdError):
            await svc.check_write("put", rpc_pb2.PutRequest(key=b"a", value=b"x"))
        assert kv.proposed == ["alarm"]
        await svc.check_write("delete_range", rpc_pb2.DeleteRangeRequest(key=b"a"))
        A = rpc_pb2.AlarmRequest
        got = await svc.alarm(A(action=A.GET))
        assert [(a.memberID, a.alarm) for a in got.alarms] == [(FakeKv.member_id, NOSPACE)]
        await svc.alarm(A(action=A.DEACTIVATE, memberID=FakeKv.member_id, alarm=NOSPACE))
        await svc.check_write("put", rpc_pb2.PutRequest(key=b"a", value=b"x"))

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_snapshot_hash_hashkv_defragment(member, tmp_path: Path) -> None:
    member.fill(500)
    svc, _, _ = _service(member, tmp_path, quota=0)

    async def scenario() -> None:
        chunks = [c async for c in svc.snapshot(rpc_pb2.SnapshotRequest())]
        assert chunks[-1].remaining_bytes == 0 and len(chunks[-1].blob) == HASH_LEN
        assert not list((tmp_path / "s").iterdir())  # spooled backup removed
        h1 = (await svc.hash(rpc_pb2.HashRequest())).hash
        hk = svc.hash_kv(rpc_pb2.HashKVRequest())
        assert (hk.hash, hk.compact_revision) == (*member.store.hash_kv(0)[:1], -1)
        resp = await svc.defragment(rpc_pb2.DefragmentRequest())
        assert not resp.HasField("header")  # etcd 3.4 sends none
        assert (await svc.hash(rpc_pb2.HashRequest())).hash == h1  # data unchanged
        await svc.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
