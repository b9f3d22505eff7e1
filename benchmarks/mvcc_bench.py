"""Micro-benchmark of MvccStore: puts/s and gets/s with apply batches of 100.

Run: PYTHONPATH=. python benchmarks/mvcc_bench.py [--keys 20000] [--batch 100] [--dir PATH]
Prints one line per phase. Numbers are single-threaded, RocksDB on local disk.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable

from kvstore.mvcc import MvccStore
from kvstore.pb import rpc_pb2
from kvstore.storage.backend import Backend


def timed(label: str, n: int, fn: Callable[[], None]) -> None:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    print(f"{label:<44} {n / dt:>10,.0f} ops/s  ({dt * 1e6 / n:6.1f} us/op)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    n, size = args.keys, args.batch
    keys = [b"/registry/pods/ns-%03d/pod-%06d" % (i % 100, i) for i in range(n)]
    value = b"v" * 256
    rng = random.Random(42)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        backend = Backend.open(f"{tmp}/db")
        store = MvccStore(backend)

        def put_all(sync: bool, ks: list[bytes]) -> Callable[[], None]:
            def run() -> None:
                for start in range(0, len(ks), size):
                    batch = store.begin_batch()
                    for key in ks[start : start + size]:
                        batch.put(rpc_pb2.PutRequest(key=key, value=value))
                    batch.set_meta(b"applied_index", start.to_bytes(8, "big"))
                    batch.commit(sync=sync)

            return run

        timed(f"put new keys (batch {size}, no sync)", n, put_all(False, keys))
        shuffled = keys[:]
        rng.shuffle(shuffled)
        timed(f"put existing keys (batch {size}, no sync)", n, put_all(False, shuffled))
        timed(f"put existing keys (batch {size}, sync)", n, put_all(True, shuffled))

        def gets() -> None:
            for key in shuffled:
                store.range(rpc_pb2.RangeRequest(key=key))

        timed("get one key at current revision", n, gets)

        def old_gets() -> None:
            rev = store.current_revision - n
            for key in shuffled:
                store.range(rpc_pb2.RangeRequest(key=key, revision=rev))

        timed("get one key at a past revision", n, old_gets)

        prefixes = [b"/registry/pods/ns-%03d/" % i for i in range(100)]
        reps = 20

        def prefix_ranges() -> None:
            for _ in range(reps):
                for p in prefixes:
                    store.range(rpc_pb2.RangeRequest(key=p, range_end=p[:-1] + b"0"))

        timed(f"range prefix of {n // 100} keys", reps * 100, prefix_ranges)

        def txns() -> None:
            for start in range(0, n, size):
                batch = store.begin_batch()
                for key in shuffled[start : start + size]:
                    cmp = rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.VERSION,
                                          result=rpc_pb2.Compare.GREATER, version=0)
                    batch.txn(rpc_pb2.TxnRequest(
                        compare=[cmp],
                        success=[rpc_pb2.RequestOp(
                            request_put=rpc_pb2.PutRequest(key=key, value=value))],
                    ))
                batch.commit(sync=False)

        timed(f"txn compare+put (batch {size}, no sync)", n, txns)

        t0 = time.perf_counter()
        batch = store.begin_batch()
        batch.compact(store.current_revision - 1)
        batch.commit()
        print(f"compact {4 * n:,} revisions -> {n:,} kept        "
              f"{(time.perf_counter() - t0) * 1e3:8.1f} ms")
        backend.close()
        t0 = time.perf_counter()
        backend = Backend.open(f"{tmp}/db")
        store = MvccStore(backend)
        print(f"reopen + rebuild index of {store.key_count():,} keys        "
              f"{(time.perf_counter() - t0) * 1e3:8.1f} ms")
        backend.close()


if __name__ == "__main__":
    main()
