"""Fixtures for maintenance tests: a backend + MVCC store with seeded data."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.mvcc import MvccStore
from kvstore.pb import rpc_pb2
from kvstore.storage.backend import Backend


class Member:
    """One member's database: backend + store (+ reopen)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backend = Backend.open(path)
        self.store = MvccStore(self.backend)

    def put(self, key: bytes, value: bytes) -> None:
        batch = self.store.begin_batch()
        batch.put(rpc_pb2.PutRequest(key=key, value=value))
        batch.commit(sync=False)

    def delete(self, key: bytes) -> None:
        batch = self.store.begin_batch()
        batch.delete_range(rpc_pb2.DeleteRangeRequest(key=key))
        batch.commit(sync=False)

    def set_meta(self, key: bytes, value: bytes) -> None:
        batch = self.store.begin_batch()
        batch.set_meta(key, value)
        batch.commit(sync=False)

    def get(self, key: bytes) -> bytes | None:
        resp = self.store.range(rpc_pb2.RangeRequest(key=key))
        return resp.kvs[0].value if resp.kvs else None

    def fill(self, n: int, seed: int = 7) -> dict[bytes, bytes]:
        rng = random.Random(seed)
        model: dict[bytes, bytes] = {}
        for i in range(n):
            key = b"key/%04d" % rng.randrange(n // 2 + 1)
            if model and rng.random() < 0.1:
                victim = rng.choice(sorted(model))
                self.delete(victim)
                del model[victim]
            else:
                value = b"v%d-" % i + rng.randbytes(rng.randrange(1, 64))
                self.put(key, value)
                model[key] = value
        return model

    def reopen(self) -> None:
        self.backend.close()
        self.backend = Backend.open(self.path)
        self.store = MvccStore(self.backend)

    def close(self) -> None:
        self.backend.close()


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    m = Member(tmp_path / "a" / "db")
    yield m
    m.close()


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Member]:
    m = Member(tmp_path / "b" / "db")
    yield m
    m.close()
