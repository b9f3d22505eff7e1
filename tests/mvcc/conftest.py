"""Fixtures for MVCC component tests: a store on RocksDB under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.mvcc import MvccStore
from kvstore.storage.backend import Backend


class StoreHarness:
    """Owns a backend + store; `reopen()` rebuilds the store from disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.backend = Backend.open(path)
        self.store = MvccStore(self.backend)

    def reopen(self) -> MvccStore:
        hooks = self.store.lease_hooks
        self.backend.close()
        self.backend = Backend.open(self.path)
        self.store = MvccStore(self.backend, hooks)
        return self.store

    def close(self) -> None:
        self.backend.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[StoreHarness]:
    h = StoreHarness(tmp_path / "db")
    yield h
    h.close()
