"""Client-side helpers for the end-to-end tests: raw etcd stubs, a bounded
write load that records every acknowledged write, and convergence checks
(member list, HashKV)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import grpc

from kvstore.pb import rpc_pb2, rpc_pb2_grpc


def kv_stub(endpoint: str) -> tuple[grpc.Channel, rpc_pb2_grpc.KVStub]:
    ch = grpc.insecure_channel(endpoint)
    return ch, rpc_pb2_grpc.KVStub(ch)


def get_serializable(endpoint: str, key: bytes) -> bytes | None:
    ch, stub = kv_stub(endpoint)
    with ch:
        resp = stub.Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5)
    return resp.kvs[0].value if resp.kvs else None


def dump_prefix(endpoint: str, prefix: bytes, serializable: bool = True) -> dict[bytes, bytes]:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    ch, stub = kv_stub(endpoint)
    with ch:
        resp = stub.Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=end, serializable=serializable),
            timeout=10,
        )
    return {kv.key: kv.value for kv in resp.kvs}


def put_many(endpoint: str, n: int, prefix: bytes) -> int:
    """Put `prefix%04d` = `v%d` for i < n, one call each; returns the last revision."""
    ch, kv = kv_stub(endpoint)
    with ch:
        rev = 0
        for i in range(n):
            rev = kv.Put(
                rpc_pb2.PutRequest(key=prefix + b"%04d" % i, value=b"v%d" % i), timeout=10
            ).header.revision
        return rev


def member_list(endpoint: str) -> list:
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.ClusterStub(ch)
        return list(stub.MemberList(rpc_pb2.MemberListRequest(), timeout=5).members)


def hash_kv(endpoint: str, rev: int) -> int | None:
    """HashKV at `rev`, or None while the member is down or not yet at `rev`."""
    try:
        with grpc.insecure_channel(endpoint) as ch:
            stub = rpc_pb2_grpc.MaintenanceStub(ch)
            return stub.HashKV(rpc_pb2.HashKVRequest(revision=rev), timeout=5).hash
    except grpc.RpcError:
        return None


@dataclass
class WriteLoad:
    """`writers` threads, each doing at most `per_writer` puts or `max_seconds`.

    A put counts as acknowledged only when the server answered OK; failed
    puts (ambiguous) are retried under a new key on another endpoint."""

    endpoints: list[str]
    writers: int = 3
    per_writer: int = 300
    max_seconds: float = 20.0
    prefix: bytes = b"load/"
    acked: dict[bytes, bytes] = field(default_factory=dict)
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> WriteLoad:
        for w in range(self.writers):
            t = threading.Thread(target=self._run, args=(w,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, w: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        chans = [kv_stub(ep) for ep in self.endpoints]
        ep = w % len(chans)
        attempt = 0
        try:
            for n in range(self.per_writer):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                attempt += 1
                key = self.prefix + b"w%d-%05d-%d" % (w, n, attempt)
                value = b"v-%d-%d" % (w, n)
                try:
                    chans[ep][1].Put(rpc_pb2.PutRequest(key=key, value=value), timeout=3)
                except grpc.RpcError:
                    with self._lock:
                        self.failures += 1
                    ep = (ep + 1) % len(chans)
                    continue
                with self._lock:
                    self.acked[key] = value
        finally:
            for ch, _ in chans:
                ch.close()

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self, timeout: float = 60.0) -> None:
        """End the load early (writers finish their call in flight) and join."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        self._stop.set()
        assert not any(t.is_alive() for t in self._threads), "writers did not finish"
