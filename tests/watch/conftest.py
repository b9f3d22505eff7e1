"""Fixtures for watch component tests: an MvccStore on RocksDB under tmp_path
and a WatchHub fed the way the apply loop feeds it (commit, then publish)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.mvcc import MvccStore
from kvstore.pb import rpc_pb2
from kvstore.storage.backend import Backend
from kvstore.watch import WatchHub, WatchStream


class Applied:
    """A store plus a hub; every write is committed and published like apply does."""

    def __init__(self, path: Path, **hub_kw: int) -> None:
        self.backend = Backend.open(path)
        self.store = MvccStore(self.backend)
        self.hub = WatchHub(self.store, **hub_kw)

    def _commit(self, fn) -> None:  # noqa: ANN001
        batch = self.store.begin_batch()
        fn(batch)
        self.hub.publish(batch.commit())

    def put(self, key: bytes, value: bytes = b"v", lease: int = 0) -> None:
        self._commit(lambda b: b.put(rpc_pb2.PutRequest(key=key, value=value, lease=lease)))

    def delete(self, key: bytes, range_end: bytes = b"") -> None:
        self._commit(
            lambda b: b.delete_range(rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end))
        )

    def txn_puts(self, *keys: bytes) -> None:
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"t")) for k in keys]
        self._commit(lambda b: b.txn(rpc_pb2.TxnRequest(success=ops)))

    def compact(self, revision: int) -> None:
        self._commit(lambda b: b.compact(revision))

    def watch(self, stream: WatchStream | None = None, **req: object) -> tuple[WatchStream, int]:
        stream = stream or self.hub.new_stream()
        wid = stream.create(rpc_pb2.WatchCreateRequest(**req))
        return stream, wid

    def catch_up(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            if not self.hub.sync_unsynced():
                return
        raise AssertionError("catch-up did not settle")


def drain(stream: WatchStream) -> list[rpc_pb2.WatchResponse]:
    out = []
    while True:
        resp = stream.pop_nowait()
        if resp is None:
            return out
        out.append(resp)


def event_revs(responses: list[rpc_pb2.WatchResponse]) -> list[tuple[bytes, int]]:
    return [(ev.kv.key, ev.kv.mod_revision) for r in responses for ev in r.events]


@pytest.fixture
def applied(tmp_path: Path) -> Iterator[Applied]:
    a = Applied(tmp_path / "db")
    yield a
    a.backend.close()


@pytest.fixture
def make_applied(tmp_path: Path) -> Iterator:
    made: list[Applied] = []

    def make(**kw: int) -> Applied:
        a = Applied(tmp_path / f"db{len(made)}", **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        a.backend.close()
