"""KvNode: one running member's lifecycle.

Owns: building its parts through the composition root
(server.assembly.NodeParts: peer channel pool, data dir, Raft core, apply
pipeline, transport, driver, forwarding, facades), starting them and tearing
them down in the reverse order;
the peer gRPC server (unless one is passed in, e.g. bound to port 0 by a
test) with the member-list RPC joiners ask (kvstore.server.join);
publishing this member's name and client URLs through Raft once a leader
exists (etcd's `publish`), until the member table shows them; setting
`removed` once this member is out of the cluster — it applied its own
removal (or a snapshot/member table saying so), or a peer's transport refused
it as removed (a removed follower never receives its removal entry) — and
keeping the transport's removed-id set equal to the member table's.
Never: serves clients (the caller adds the api servicers to its own client
server around `node.kv`); never reads the clock except to seed randomness.

Start: `node = KvNode(cfg); await node.start()`; stop: `await node.stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import grpc

from kvstore import errors
from kvstore.lease import Lessor
from kvstore.pb import internal_pb2, kv_pb2
from kvstore.seams import WatchHook
from kvstore.server.applier import Applier, ApplyResult
from kvstore.server.assembly import NodeEvents, NodeParts
from kvstore.server.config import NodeConfig, host_port
from kvstore.server.datadir import OpenedDataDir
from kvstore.server.errors import StartupError
from kvstore.server.join import add_members_service, serve_snapshot
from kvstore.server.kv_server import KvServer
from kvstore.server.metrics import NodeMetrics
from kvstore.server.node import NodeDriver
from kvstore.transport import SERVER_OPTIONS, GrpcTransport
from kvstore.watch import WatchHub

log = logging.getLogger(__name__)

# A publish proposal not applied within this many election timeouts is
# proposed again (it was lost: dropped by a leader change, or applied as part
# of a snapshot, where its waiter never fires). Its success is seen in the
# member table, so a retry costs one duplicate, idempotent entry at most.
PUBLISH_ATTEMPT_ELECTIONS = 3


def listen_address(url: str, flag: str) -> str:
    host, port = host_port(url, flag)
    return f"{host}:{port}"


def bind(
    server: grpc.aio.Server,
    url: str,
    flag: str,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Bind `server` to `url` (TLS with `credentials` when the URL is
    https://, else insecure); StartupError with one line on failure."""
    addr = listen_address(url, flag)
    host, port = host_port(url, flag)
    if port and not _can_bind(host, port):
        # Checked first so gRPC core does not log its own multi-line error.
        raise StartupError(f"cannot listen on {url} ({flag}): address already in use")
    try:
        if url.startswith("https://"):
            if credentials is None:
                raise StartupError(f"cannot listen on {url} ({flag}): no TLS certificate given")
            port = server.add_secure_port(addr, credentials)
        else:
            port = server.add_insecure_port(addr)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {url} ({flag}): address in use?") from exc
    if port == 0:
        raise StartupError(f"cannot listen on {url} ({flag}): address in use?")
    return port


def _can_bind(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class KvNode(NodeEvents):
    """Owns one member's lifecycle; its parts are built by server.assembly."""

    def __init__(
        self,
        cfg: NodeConfig,
        *,
        peer_server: grpc.aio.Server | None = None,
        watch_hook: WatchHook | None = None,
        persist_in_thread: bool = True,
    ) -> None:
        self.cfg = cfg
        self._peer_server = peer_server
        self._watch_hook = watch_hook
        self._persist_in_thread = persist_in_thread
        self.parts: NodeParts | None = None
        self._publish_task: asyncio.Task[None] | None = None
        # Set whenever the member table may have changed (apply or snapshot).
        self._members_changed = asyncio.Event()
        # Set once this member is removed from the cluster: it applied its own
        # removal, or a peer refused its stream as removed. The process owner
        # (kvstore.cli.server_cmd) waits on it and exits, like etcd.
        self.removed = asyncio.Event()
        self._apply_listeners: list[Callable[[ApplyResult], None]] = []
        # Read at scrape time; observes the write path (given to the parts)
        # and counts RPCs (the api reads it from `kv.metrics`).
        self.metrics = NodeMetrics(self)

    # --- the parts (None before start() and after stop()) ------------------
    @property
    def data(self) -> OpenedDataDir | None:
        return self.parts.data if self.parts is not None else None

    @property
    def driver(self) -> NodeDriver | None:
        return self.parts.driver if self.parts is not None else None

    @property
    def kv(self) -> KvServer | None:
        return self.parts.kv if self.parts is not None else None

    @property
    def applier(self) -> Applier | None:
        return self.parts.applier if self.parts is not None else None

    @property
    def transport(self) -> GrpcTransport | None:
        return self.parts.transport if self.parts is not None else None

    @property
    def watch_hub(self) -> WatchHub | None:
        return self.parts.hub if self.parts is not None else None

    @property
    def lessor(self) -> Lessor | None:
        return self.parts.lessor if self.parts is not None else None

    def add_apply_listener(self, fn: Callable[[ApplyResult], None]) -> None:
        self._apply_listeners.append(fn)

    async def start(self) -> None:
        """Build the parts (a joiner first learns its ids from the running
        cluster), start them. Raises DataDirError / StartupError (one-line
        messages) without leaving tasks behind."""
        cfg = self.cfg
        self.parts = parts = await NodeParts.open(
            cfg, metrics=self.metrics, events=self,
            persist_in_thread=self._persist_in_thread,
        )  # fmt: skip
        try:
            self.members_changed()
            if self._peer_server is None:
                # so_reuseport=0: fail loudly when the peer port is taken.
                self._peer_server = grpc.aio.server(
                    options=[*SERVER_OPTIONS, ("grpc.so_reuseport", 0)]
                )
                for url in cfg.listen_peer_urls:
                    bind(self._peer_server, url, "--listen-peer-urls",
                         parts.peer_tls.credentials if parts.peer_tls else None)  # fmt: skip
            parts.transport.add_to_server(self._peer_server)
            add_members_service(self._peer_server, serve_snapshot(self))
            await self._peer_server.start()
            await parts.start()
            member_id = parts.data.member_id
            if tuple(parts.core.conf_state.voters) == (member_id,) and parts.core.leader_id == 0:
                parts.driver.campaign()  # single voter: no reason to wait a timeout
            self._publish_task = asyncio.create_task(self._publish(), name="publish-attributes")
        except BaseException:
            await self.stop()
            raise

    # --- NodeEvents: what the parts report -------------------------------------
    def published(self, events: list[tuple[int, list[kv_pb2.Event]]]) -> None:
        if self._watch_hook is not None:
            self._watch_hook(events)

    def told_removed(self) -> None:
        """Transport callback: a peer refused our stream as a removed member."""
        self._mark_removed("a peer reports it")

    def applied(self, result: ApplyResult) -> None:
        data = self.data
        if data is not None and data.member_id in result.removed:
            # etcd stops a member that applies its own removal.
            self._mark_removed("applied its own removal")
        if result.members_changed:
            self.members_changed()
        for fn in self._apply_listeners:
            fn(result)

    def members_changed(self) -> None:
        """Sync the transport with the member table (start, apply, snapshot)."""
        assert self.parts is not None
        members = self.parts.data.members
        me = self.parts.data.member_id
        peers = {mid: url for mid, url in members.peer_urls().items() if mid != me}
        self.parts.transport.set_peers(peers)
        self.parts.transport.set_removed(members.removed)
        self._members_changed.set()
        if members.is_removed(me):
            # Also on a restart after the removal was applied, or when a
            # snapshot carries it: a removed member has nothing left to do.
            self._mark_removed("in the member table")

    def _mark_removed(self, how: str) -> None:
        if self.removed.is_set():
            return
        member_id = self.data.member_id if self.data is not None else 0
        # etcd's stop reason, word for word (server_cmd logs it again on exit).
        log.warning("member %x has been permanently removed from the cluster (%s)",
                    member_id, how)  # fmt: skip
        self.removed.set()

    def _attributes_published(self) -> bool:
        assert self.data is not None
        current = self.data.members.get(self.data.member_id)
        return (
            current is not None
            and current.name == self.cfg.name
            and list(current.client_urls) == list(self.cfg.advertise_client_urls)
        )

    async def _publish(self) -> None:
        """Propose our name + client URLs until the member table shows them
        (etcd's publish).

        Success is read from the member table, not only from the proposal's
        answer: a joiner that catches up by snapshot applies its own publish
        entry inside the snapshot, where no waiter fires, and a proposal lost
        to a leader change is never answered; both used to cost a full request
        timeout. Each attempt first waits for a leader (proposing earlier only
        fails), and ends early as soon as the table shows the attributes."""
        assert self.kv is not None and self.data is not None and self.driver is not None
        kv, driver = self.kv, self.driver
        attrs = internal_pb2.MemberAttributes(
            member_id=self.data.member_id,
            name=self.cfg.name,
            client_urls=list(self.cfg.advertise_client_urls),
        )
        attempt_s = PUBLISH_ATTEMPT_ELECTIONS * self.cfg.election_timeout_s
        loop = asyncio.get_running_loop()
        while not self._attributes_published():
            if self.data.members.is_removed(self.data.member_id):
                return  # removed from the cluster: nothing to publish to
            try:
                await driver.wait_leader()
            except errors.EtcdError:
                if driver.stopped:
                    return
                continue  # still no leader: keep waiting (wait_leader is bounded)
            proposal = asyncio.ensure_future(kv.propose("member_attributes", attrs))
            proposal.add_done_callback(_consume_exception)
            deadline = loop.time() + attempt_s
            while not proposal.done() and not self._attributes_published():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.info("publishing member attributes: no answer yet, proposing again")
                    break
                self._members_changed.clear()
                changed = asyncio.ensure_future(self._members_changed.wait())
                try:
                    await asyncio.wait({proposal, changed}, timeout=remaining,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                finally:
                    changed.cancel()
            if proposal.done() and not proposal.cancelled():
                exc = proposal.exception()
                if exc is None:
                    return
                if driver.stopped or exc == errors.STOPPED():
                    return
                # NO_LEADER / TIMEOUT / TOO_MANY_REQUESTS: try again after a
                # tick (wait_leader() above paces it while there is no leader).
                await asyncio.sleep(self.cfg.tick_interval_s)

    async def stop(self) -> None:
        """Stop the parts and the peer server; close the database."""
        if self._publish_task is not None:
            self._publish_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._publish_task
            self._publish_task = None
        parts = self.parts
        if parts is not None:
            await parts.stop()
        if self._peer_server is not None:
            # A pre-bound server passed in is handed over: we start and stop it.
            await self._peer_server.stop(grace=0.5)
        if parts is not None:
            parts.data.close()
            self.parts = None


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    """Retrieve a dropped proposal's outcome so asyncio does not log it."""
    if not fut.cancelled():
        fut.exception()
