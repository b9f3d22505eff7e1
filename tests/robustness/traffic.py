"""Mixed client traffic against a cluster, recording every operation.

Owns: the client tasks of a robustness run (KV writers/readers, watchers,
lease users, an occasional compactor), each recording invoke/return times
(time.monotonic, shared by every process on the host) into a `History`.

Never: retries a write (a write without an answer is recorded as
indeterminate, ret=None); never records a read that failed (it had no
effect). Talks to the members only through raw etcd v3 gRPC stubs, so that
what is recorded is exactly what was sent and answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc

from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from tests.robustness.history import History, OpRecord

PREFIX = "/rob/"
KV_PREFIX = "/rob/kv/"
LEASE_PREFIX = "/rob/lease/"
OP_TIMEOUT_S = 2.0
WATCH_SILENCE_S = 4.0  # no answer to progress requests for this long: reconnect


def now() -> float:
    return time.monotonic()


def prefix_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass
class TrafficConfig:
    endpoints: list[str]
    seed: int
    kv_clients: int = 4
    keys: int = 8
    lease_clients: int = 2
    lease_ttl_s: int = 3
    compact_every_s: float = 6.0
    pace_s: float = 0.01  # pause between one client's operations
    # Harness self-test only: send "linearizable" reads as serializable ones
    # (a server serving stale local reads) to prove the checkers notice.
    stale_reads: bool = False


class Traffic:
    def __init__(self, cfg: TrafficConfig, history: History) -> None:
        self.cfg = cfg
        self.h = history
        self.rng = random.Random(cfg.seed)
        self.stopping = asyncio.Event()
        self.channels = {ep: grpc.aio.insecure_channel(ep) for ep in cfg.endpoints}
        self.watch_next: dict[str, int] = {}  # watch name -> next revision it needs
        self.last_revision = 1
        self._tasks: list[asyncio.Task[Any]] = []
        self._watch_tasks: list[asyncio.Task[Any]] = []
        self._watches_done = asyncio.Event()

    # ------------------------------------------------------------ plumbing
    def _kv(self, ep: str) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channels[ep])

    def _note_rev(self, rev: int) -> None:
        self.last_revision = max(self.last_revision, rev)

    async def start(self) -> None:
        for c in range(self.cfg.kv_clients):
            self._tasks.append(asyncio.create_task(self._kv_client(c)))
        for c in range(self.cfg.lease_clients):
            self._tasks.append(asyncio.create_task(self._lease_client(100 + c)))
        self._tasks.append(asyncio.create_task(self._compactor()))
        specs = [
            ("all", PREFIX, prefix_end(PREFIX), True, True),
            ("kv", KV_PREFIX, prefix_end(KV_PREFIX), False, False),
            ("k0", KV_PREFIX + "k0", "", True, False),
            ("lease", LEASE_PREFIX, prefix_end(LEASE_PREFIX), True, False),
        ]
        for i, (name, key, end, prev_kv, covers_all) in enumerate(specs):
            rec = {
                "name": name,
                "key": key,
                "range_end": end,
                "prev_kv": prev_kv,
                "covers_all": covers_all,
                "segments": [],
                "responses": [],
            }
            self.h.watches.append(rec)
            self._watch_tasks.append(asyncio.create_task(self._watch(rec, i)))

    async def stop_clients(self) -> None:
        """Stop KV / lease / compaction traffic (lease clients finish observing)."""
        self.stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def finish_watches(self, final_revision: int, timeout_s: float = 30.0) -> bool:
        """Wait until every live watch vouched for `final_revision`, then stop them."""
        deadline = now() + timeout_s
        ok = False
        while now() < deadline:
            if all(n > final_revision for n in self.watch_next.values()):
                ok = True
                break
            await asyncio.sleep(0.1)
        self._watches_done.set()
        for t in self._watch_tasks:
            t.cancel()
        await asyncio.gather(*self._watch_tasks, return_exceptions=True)
        return ok

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()

    # ------------------------------------------------------------------- KV
    async def _kv_client(self, client: int) -> None:
        rng = random.Random(self.cfg.seed * 1000 + client)
        eps = list(self.cfg.endpoints)
        ep = eps[client % len(eps)]
        seq = 0
        while not self.stopping.is_set():
            seq += 1
            key = f"{KV_PREFIX}k{rng.randrange(self.cfg.keys)}"
            r = rng.random()
            if r < 0.30:
                ok = await self._put(client, ep, key, f"c{client}.{seq}")
            elif r < 0.55:
                ok = await self._get(client, ep, key, serializable=False)
            elif r < 0.65:
                ok = await self._get(client, ep, key, serializable=True)
            elif r < 0.90:
                ok = await self._cas(client, ep, key, f"c{client}.{seq}", rng)
            else:
                ok = await self._delete(client, ep, key)
            if not ok:
                # One client per member stays (Jepsen-style: what an isolated
                # or lagging member serves is observed too); the rest roam.
                if client >= len(eps):
                    ep = rng.choice([e for e in eps if e != ep] or eps)
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.cfg.pace_s)

    def _record(self, op: OpRecord) -> None:
        self.h.ops.append(op)

    async def _put(self, client: int, ep: str, key: str, value: str) -> bool:
        op = OpRecord(client, "put", key, value, None, now(), None, endpoint=ep)
        self._record(op)
        try:
            resp = await self._kv(ep).Put(
                rpc_pb2.PutRequest(key=key.encode(), value=value.encode()), timeout=OP_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            op.error = f"{exc.code().name}: {exc.details()}"
            return False
        op.ret, op.output, op.revision = now(), "ok", resp.header.revision
        self._note_rev(op.revision)
        return True

    async def _get(self, client: int, ep: str, key: str, serializable: bool) -> bool:
        call = now()
        try:
            resp = await self._kv(ep).Range(
                rpc_pb2.RangeRequest(
                    key=key.encode(), serializable=serializable or self.cfg.stale_reads
                ),
                timeout=OP_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError:
            return False  # a failed read had no effect: not recorded
        ret = now()
        kv = resp.kvs[0] if resp.kvs else None
        self._record(
            OpRecord(
                client,
                "get",
                key,
                None,
                kv.value.decode() if kv else None,
                call,
                ret,
                revision=resp.header.revision,
                mod_revision=kv.mod_revision if kv else 0,
                serializable=serializable,
                endpoint=ep,
            )
        )
        return True

    async def _cas(self, client: int, ep: str, key: str, new: str, rng: random.Random) -> bool:
        # Expect the value a fresh serializable read shows (often current,
        # sometimes stale: both outcomes of the compare get exercised).
        expect: str | None = None
        with contextlib.suppress(grpc.aio.AioRpcError):
            got = await self._kv(ep).Range(
                rpc_pb2.RangeRequest(key=key.encode(), serializable=True), timeout=OP_TIMEOUT_S
            )
            expect = got.kvs[0].value.decode() if got.kvs else None
        if expect is None:
            cmp = rpc_pb2.Compare(
                key=key.encode(),
                target=rpc_pb2.Compare.VERSION,
                result=rpc_pb2.Compare.EQUAL,
                version=0,
            )
        else:
            cmp = rpc_pb2.Compare(
                key=key.encode(),
                target=rpc_pb2.Compare.VALUE,
                result=rpc_pb2.Compare.EQUAL,
                value=expect.encode(),
            )
        req = rpc_pb2.TxnRequest(
            compare=[cmp],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=key.encode(), value=new.encode())
                )
            ],
        )
        op = OpRecord(client, "cas", key, [expect, new], None, now(), None, endpoint=ep)
        self._record(op)
        try:
            resp = await self._kv(ep).Txn(req, timeout=OP_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            op.error = f"{exc.code().name}: {exc.details()}"
            return False
        op.ret, op.output, op.revision = now(), bool(resp.succeeded), resp.header.revision
        self._note_rev(op.revision)
        return True

    async def _delete(self, client: int, ep: str, key: str) -> bool:
        op = OpRecord(client, "delete", key, None, None, now(), None, endpoint=ep)
        self._record(op)
        try:
            resp = await self._kv(ep).DeleteRange(
                rpc_pb2.DeleteRangeRequest(key=key.encode()), timeout=OP_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            op.error = f"{exc.code().name}: {exc.details()}"
            return False
        op.ret, op.output, op.revision = now(), int(resp.deleted), resp.header.revision
        self._note_rev(op.revision)
        return True

    # ------------------------------------------------------------ compaction
    async def _compactor(self) -> None:
        rng = random.Random(self.cfg.seed + 7)
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.cfg.compact_every_s)
            if self.stopping.is_set():
                return
            # Keep the watches' own resume points above the compaction, so a
            # compaction never breaks their evidence; the probe watch below
            # is what checks watches started under a compaction.
            floor = min(self.watch_next.values(), default=1) - 1
            target = min(floor, self.last_revision - 20)
            if target < 2:
                continue
            ep = rng.choice(self.cfg.endpoints)
            call = now()
            try:
                await self._kv(ep).Compact(
                    rpc_pb2.CompactionRequest(revision=target), timeout=OP_TIMEOUT_S
                )
            except grpc.aio.AioRpcError:
                continue
            self.h.compactions.append({"revision": target, "call": call, "completed": now()})
            await self._probe_compacted(ep, target)

    async def _probe_compacted(self, ep: str, compacted: int) -> None:
        """Open a watch below the compaction: it must be canceled, no event."""
        rec = {
            "name": f"probe@{compacted}",
            "key": PREFIX,
            "range_end": prefix_end(PREFIX),
            "prev_kv": False,
            "covers_all": False,
            "segments": [[now(), 1]],
            "responses": [],
        }
        self.h.watches.append(rec)
        call = rpc_pb2_grpc.WatchStub(self.channels[ep]).Watch()
        try:
            await call.write(
                rpc_pb2.WatchRequest(
                    create_request=rpc_pb2.WatchCreateRequest(
                        key=PREFIX.encode(), range_end=prefix_end(PREFIX).encode(), start_revision=1
                    )
                )
            )
            for _ in range(3):
                resp = await asyncio.wait_for(call.read(), OP_TIMEOUT_S)
                if resp is grpc.aio.EOF:
                    break
                rec["responses"].append(_response(resp, 0))
                if resp.canceled:
                    break
        except (TimeoutError, grpc.aio.AioRpcError):
            pass
        finally:
            call.cancel()

    # --------------------------------------------------------------- watches
    async def _watch(self, rec: dict[str, Any], index: int) -> None:
        eps = self.cfg.endpoints
        next_rev = 1
        attempt = index
        self.watch_next[rec["name"]] = next_rev
        while True:
            ep = eps[attempt % len(eps)]
            attempt += 1
            seg = len(rec["segments"])
            rec["segments"].append([now(), next_rev])
            call = rpc_pb2_grpc.WatchStub(self.channels[ep]).Watch()
            pinger: asyncio.Task[Any] | None = None
            try:
                await call.write(
                    rpc_pb2.WatchRequest(
                        create_request=rpc_pb2.WatchCreateRequest(
                            key=rec["key"].encode(),
                            range_end=rec["range_end"].encode(),
                            start_revision=next_rev,
                            prev_kv=rec["prev_kv"],
                            progress_notify=True,
                        )
                    )
                )
                pinger = asyncio.create_task(_ping(call))
                while True:
                    resp = await asyncio.wait_for(call.read(), WATCH_SILENCE_S)
                    if resp is grpc.aio.EOF:
                        break
                    r = _response(resp, seg)
                    rec["responses"].append(r)
                    if r["events"]:
                        next_rev = max(next_rev, r["events"][-1][1][2] + 1)
                    if r["progress"]:
                        next_rev = max(next_rev, r["rev"] + 1)
                    self.watch_next[rec["name"]] = next_rev
                    if resp.canceled:
                        if resp.compact_revision:
                            why = f"compacted at {resp.compact_revision}"
                            self.h.notes.append(f"watch {rec['name']} canceled: {why}")
                            self.watch_next.pop(rec["name"], None)
                            return
                        break
            except (TimeoutError, grpc.aio.AioRpcError):
                pass
            finally:
                if pinger is not None:
                    pinger.cancel()
                call.cancel()
            await asyncio.sleep(0.2)

    # ---------------------------------------------------------------- leases
    async def _lease_client(self, client: int) -> None:
        rng = random.Random(self.cfg.seed * 1000 + client)
        n = 0
        while not self.stopping.is_set():
            n += 1
            ep = rng.choice(self.cfg.endpoints)
            await self._one_lease(client, n, ep, rng)

    async def _one_lease(self, client: int, n: int, ep: str, rng: random.Random) -> None:
        ttl = self.cfg.lease_ttl_s
        lease = rpc_pb2_grpc.LeaseStub(self.channels[ep])
        grant_call = now()
        try:
            g = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=OP_TIMEOUT_S)
        except grpc.aio.AioRpcError:
            return
        rec: dict[str, Any] = {
            "id": g.ID,
            "ttl": g.TTL,
            "grant_call": grant_call,
            "grant_ret": now(),
            "keys": {},
            "renewals": [],
            "revoke_call": None,
            "revoke_ok": False,
            "observations": [],
        }
        self.h.leases.append(rec)
        key = f"{LEASE_PREFIX}{client}.{n}"
        try:
            await self._kv(ep).Put(
                rpc_pb2.PutRequest(key=key.encode(), value=b"x", lease=g.ID), timeout=OP_TIMEOUT_S
            )
            rec["keys"][key] = now()
        except grpc.aio.AioRpcError:
            return  # attach unknown: nothing to expect of the key
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            rec["renewals"].append(await self._keepalive(lease, g.ID))
        if rng.random() < 0.2:
            rec["revoke_call"] = now()
            with contextlib.suppress(grpc.aio.AioRpcError):
                await lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=g.ID), timeout=OP_TIMEOUT_S)
                rec["revoke_ok"] = True
        # Observe the key until it is gone (linearizable reads, any member).
        last = max([rec["grant_ret"]] + [r[1] for r in rec["renewals"]])
        deadline = last + rec["ttl"] + 15.0
        while now() < deadline:
            read_ep = rng.choice(self.cfg.endpoints)
            call = now()
            try:
                resp = await self._kv(read_ep).Range(
                    rpc_pb2.RangeRequest(key=key.encode()), timeout=OP_TIMEOUT_S
                )
            except grpc.aio.AioRpcError:
                continue
            present = bool(resp.kvs)
            rec["observations"].append([key, call, now(), present])
            if not present:
                return
            await asyncio.sleep(0.25)

    async def _keepalive(self, lease: rpc_pb2_grpc.LeaseStub, lease_id: int) -> list[Any]:
        call_t = now()
        stream = lease.LeaseKeepAlive()
        try:
            await stream.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            resp = await asyncio.wait_for(stream.read(), OP_TIMEOUT_S)
            if resp is grpc.aio.EOF:
                return [call_t, now(), None]
            return [call_t, now(), int(resp.TTL)]
        except (TimeoutError, grpc.aio.AioRpcError):
            return [call_t, now(), None]
        finally:
            stream.cancel()


async def _ping(call: Any) -> None:
    """Ask for progress every second: proves the stream is alive and lets the
    watch vouch for revisions with no matching event."""
    with contextlib.suppress(Exception):
        while True:
            await asyncio.sleep(1.0)
            await call.write(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))


def _kv_list(kv: Any) -> list[Any]:
    return [
        kv.key.decode(),
        kv.value.decode(),
        kv.mod_revision,
        kv.create_revision,
        kv.version,
        kv.lease,
    ]


def _response(resp: Any, segment: int) -> dict[str, Any]:
    events = []
    for e in resp.events:
        typ = "PUT" if e.type == 0 else "DELETE"
        kv = _kv_list(e.kv)
        if typ == "DELETE":
            kv = [kv[0], "", kv[2], 0, 0, 0]
        prev = _kv_list(e.prev_kv) if e.HasField("prev_kv") else None
        events.append([typ, kv, prev])
    control = resp.created or resp.canceled or resp.compact_revision
    return {
        "t": now(),
        "rev": resp.header.revision,
        "events": events,
        "progress": not events and not control,
        "created": bool(resp.created),
        "canceled": bool(resp.canceled),
        "compact": int(resp.compact_revision),
        "segment": segment,
    }
