"""Watcher: one watch of one stream — its key range, options and position.

Owns: what a watch wants (range, filters, prev_kv, fragment, progress_notify)
and where it is (`next_rev`, the lowest revision not yet sent to it), plus the
pure helpers that turn committed events into what this watcher may see.
Never: touches the store, the clock or the stream's queue (hub.py and
stream.py do).

Key range, after etcd's watch server normalisation (v3rpc/watch.go):

    key b""            -> b"\\x00" (the smallest key)
    range_end b""      -> exactly `key`
    range_end b"\\x00"  -> every key >= `key`
    otherwise          -> [key, range_end)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvstore.pb import kv_pb2, rpc_pb2

if TYPE_CHECKING:
    from kvstore.watch.stream import WatchStream

Event = kv_pb2.Event
FROM_KEY = b"\x00"


@dataclass(eq=False)
class Watcher:
    """A single watch. Identity semantics (used as a dict/set member)."""

    id: int
    key: bytes
    range_end: bytes
    stream: WatchStream
    next_rev: int
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False
    fragment: bool = False
    synced: bool = False
    canceled: bool = False
    # Set when events were queued for it since the last progress tick
    # (etcd sends periodic progress only to watchers that got nothing).
    sent_since_tick: bool = field(default=False)

    @classmethod
    def from_request(
        cls, watch_id: int, req: rpc_pb2.WatchCreateRequest, stream: WatchStream, next_rev: int
    ) -> Watcher:
        filters = set(req.filters)
        return cls(
            id=watch_id,
            key=req.key or b"\x00",
            range_end=req.range_end,
            stream=stream,
            next_rev=next_rev,
            prev_kv=req.prev_kv,
            no_put=rpc_pb2.WatchCreateRequest.NOPUT in filters,
            no_delete=rpc_pb2.WatchCreateRequest.NODELETE in filters,
            progress_notify=req.progress_notify,
            fragment=req.fragment,
        )

    @property
    def is_single_key(self) -> bool:
        return not self.range_end

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == FROM_KEY:
            return key >= self.key
        return self.key <= key < self.range_end

    def wants(self, ev: kv_pb2.Event) -> bool:
        """Filters: NOPUT drops PUT events, NODELETE drops DELETE events."""
        if ev.type == Event.PUT:
            return not self.no_put
        return not self.no_delete


def strip_prev_kv(ev: kv_pb2.Event) -> kv_pb2.Event:
    """The event without prev_kv (apply attaches it; most watchers do not want it)."""
    if not ev.HasField("prev_kv"):
        return ev
    return Event(type=ev.type, kv=ev.kv)


def split_fragments(resp: rpc_pb2.WatchResponse, max_bytes: int) -> list[rpc_pb2.WatchResponse]:
    """etcd `sendFragments`: split a response larger than `max_bytes` with more
    than one event into pieces of at least one event each; every piece but the
    last carries `fragment=true`. Smaller responses come back unchanged."""
    if len(resp.events) < 2 or resp.ByteSize() < max_bytes:
        return [resp]
    pieces: list[rpc_pb2.WatchResponse] = []
    current = _empty_like(resp)
    size = current.ByteSize()
    for ev in resp.events:
        ev_size = ev.ByteSize() + 8  # field tag + length prefix, generously
        if current.events and size + ev_size > max_bytes:
            current.fragment = True
            pieces.append(current)
            current = _empty_like(resp)
            size = current.ByteSize()
        current.events.append(ev)
        size += ev_size
    pieces.append(current)
    return pieces


def _empty_like(resp: rpc_pb2.WatchResponse) -> rpc_pb2.WatchResponse:
    out = rpc_pb2.WatchResponse(watch_id=resp.watch_id)
    out.header.CopyFrom(resp.header)
    return out
