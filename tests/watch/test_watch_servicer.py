"""Watch servicer over real gRPC (127.0.0.1:0) on a single-member LocalKv."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from kvstore import errors
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from tests.watch.local_node import LocalKv, serving

TIMEOUT = 10.0


def create(**kw: object) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(**kw))


def run(coro) -> None:  # noqa: ANN001
    asyncio.run(asyncio.wait_for(coro, TIMEOUT))


@pytest.fixture
def kv(tmp_path: Path):  # noqa: ANN201
    node = LocalKv(tmp_path / "db")
    yield node
    node.close()


def test_watch_stream_create_events_cancel_progress(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv) as ch:
            kvs = rpc_pb2_grpc.KVStub(ch)
            await kvs.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"))  # rev 2
            call = rpc_pb2_grpc.WatchStub(ch).Watch()
            await call.write(create(key=b"a", start_revision=1, prev_kv=True))
            created = await call.read()
            assert created.created and created.watch_id == 0
            assert created.header.member_id == kv.member_id
            history = await call.read()
            assert [(e.kv.key, e.kv.value) for e in history.events] == [(b"a", b"1")]
            await kvs.Put(rpc_pb2.PutRequest(key=b"a", value=b"2"))
            live = await call.read()
            assert live.events[0].kv.value == b"2" and live.events[0].prev_kv.value == b"1"
            await call.write(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
            progress = await call.read()
            assert progress.watch_id == -1 and progress.header.revision == 3
            await call.write(
                rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=0))
            )
            canceled = await call.read()
            assert canceled.canceled and canceled.watch_id == 0
            call.cancel()
            await asyncio.sleep(0)
        assert kv.watch_hub.watcher_counts() == (0, 0)

    run(scenario())


def test_require_leader_refuses_stream_without_leader(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv) as ch:
            kv.has_leader = False
            call = rpc_pb2_grpc.WatchStub(ch).Watch(metadata=(("hasleader", "true"),))
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                # The refusal may end the call before this write completes.
                await call.write(create(key=b"a"))
                await call.read()
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert exc.value.details() == errors.NO_LEADER.message

    run(scenario())


def test_require_leader_cancels_stream_when_leader_is_lost(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv, leader_check_s=0.05) as ch:
            call = rpc_pb2_grpc.WatchStub(ch).Watch(metadata=(("hasleader", "true"),))
            await call.write(create(key=b"a"))
            assert (await call.read()).created
            kv.has_leader = False
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call.read()
            assert exc.value.details() == errors.NO_LEADER.message

    run(scenario())


def test_stream_without_require_leader_survives_leader_loss(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv, leader_check_s=0.05) as ch:
            call = rpc_pb2_grpc.WatchStub(ch).Watch()
            await call.write(create(key=b"a"))
            assert (await call.read()).created
            kv.has_leader = False
            kv.has_leader = True
            await rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"a"))
            assert (await call.read()).events[0].kv.key == b"a"
            call.cancel()

    run(scenario())
