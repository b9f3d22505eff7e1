"""WatchStream: the server side of one Watch gRPC stream (many watches).

Owns: the stream's watchers by id, id allocation, the create / cancel /
progress request semantics of etcd's watch server, and a bounded outbox of
WatchResponses the servicer drains with `next()`.
Never: blocks the caller of the hub (apply): the outbox only grows past its
event budget by control responses (created / canceled / progress), and a
watcher whose events do not fit is handed back to the hub's catch-up path.

Invariants:
- responses leave in the order they were queued; for one watcher that is
  created -> events in revision order -> canceled, never an event after
  its canceled response;
- `queued_events` <= `max_events` + the events of one catch-up batch
  (the hub only adds a batch while `has_room()`).
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from kvstore import errors
from kvstore.pb import rpc_pb2
from kvstore.watch.watcher import Watcher, split_fragments

if TYPE_CHECKING:
    from kvstore.watch.hub import WatchHub

WatchResponse = rpc_pb2.WatchResponse


class WatchStream:
    """Created by `WatchHub.new_stream()`; used by one servicer task."""

    def __init__(self, hub: WatchHub, max_events: int) -> None:
        self._hub = hub
        self.max_events = max_events
        self.watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self._out: collections.deque[tuple[WatchResponse, int]] = collections.deque()
        self.queued_events = 0
        self._ready = asyncio.Event()
        self.closed = False
        # A progress request waiting for every watcher of the stream to catch up.
        self.progress_pending = False

    # ------------------------------------------------------------- requests
    def create(self, req: rpc_pb2.WatchCreateRequest) -> int:
        """Handle a WatchCreateRequest; returns the watch id (-1 on duplicate)."""
        hub = self._hub
        current = hub.current_revision
        watch_id = req.watch_id
        if watch_id == 0:  # etcd AutoWatchID: the server picks the next free id
            while self._next_id in self.watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self.watchers or watch_id < 0:
            self.push(
                WatchResponse(
                    header=hub.header(current),
                    watch_id=-1,
                    created=True,
                    canceled=True,
                    cancel_reason=errors.DUPLICATE_WATCH_ID_REASON,
                )
            )
            return -1
        start = req.start_revision if req.start_revision > 0 else current + 1
        w = Watcher.from_request(watch_id, req, self, start)
        self.watchers[watch_id] = w
        self.push(WatchResponse(header=hub.header(current), watch_id=watch_id, created=True))
        hub.add(w)
        return watch_id

    def cancel(self, watch_id: int) -> bool:
        """Cancel a watch; unknown ids are ignored (etcd answers nothing)."""
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return False
        self._hub.remove(w)
        self.push(
            WatchResponse(
                header=self._hub.header(self._hub.current_revision),
                watch_id=watch_id,
                canceled=True,
            )
        )
        return True

    def request_progress(self) -> None:
        """Answer with watch_id -1 and the current revision once every watcher
        of the stream is synced (so no queued or future event is older)."""
        if all(w.synced for w in self.watchers.values()):
            self.send_progress()
        else:
            self.progress_pending = True
            self._hub.kick()

    def send_progress(self) -> None:
        self.progress_pending = False
        rev = self._hub.notified_revision  # never ahead of an event still to come
        self.push(WatchResponse(header=self._hub.header(rev), watch_id=-1))

    def close(self) -> None:
        """The client went away: drop every watcher and the outbox."""
        if self.closed:
            return
        self.closed = True
        for w in self.watchers.values():
            self._hub.remove(w)
        self.watchers.clear()
        self._out.clear()
        self.queued_events = 0
        self._ready.set()

    # --------------------------------------------------------------- output
    def has_room(self) -> bool:
        return self.queued_events < self.max_events

    def push(self, resp: WatchResponse) -> None:
        """Queue a response (control responses are never refused)."""
        if self.closed:
            return
        self._out.append((resp, len(resp.events)))
        self.queued_events += len(resp.events)
        self._ready.set()

    def push_events(self, w: Watcher, resp: WatchResponse) -> None:
        """Queue an event response for `w`, split into fragments if it asked."""
        w.sent_since_tick = True
        if w.fragment:
            for piece in split_fragments(resp, self._hub.max_response_bytes):
                self.push(piece)
        else:
            self.push(resp)

    def cancel_compacted(self, w: Watcher, compact_revision: int) -> None:
        """etcd: a watcher behind compaction gets canceled with compact_revision
        set, an empty cancel_reason and a header without revision."""
        self.watchers.pop(w.id, None)
        self.push(
            WatchResponse(
                header=self._hub.header(0),
                watch_id=w.id,
                canceled=True,
                compact_revision=compact_revision,
            )
        )

    def pop_nowait(self) -> WatchResponse | None:
        if not self._out:
            return None
        resp, n = self._out.popleft()
        had_room = self.has_room()
        self.queued_events -= n
        if not self._out and not self.closed:
            self._ready.clear()
        if n and not had_room and self.has_room():
            self._hub.kick()  # watchers parked in catch-up may continue
        return resp

    async def next(self, timeout: float | None = None) -> WatchResponse | None:
        """The next response; None when closed or when `timeout` passes first."""
        while not self._out:
            if self.closed:
                return None
            if timeout is None:
                await self._ready.wait()
            else:
                try:
                    await asyncio.wait_for(self._ready.wait(), timeout)
                except TimeoutError:
                    return None
            if not self._out and not self.closed:
                self._ready.clear()
        return self.pop_nowait()

    def __len__(self) -> int:
        return len(self._out)
