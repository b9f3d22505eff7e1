"""SimNetwork: a deterministic in-process cluster of RaftCores for tests.

Owns: message delivery with drop / delay / reorder / duplicate, directional
cuts, isolation, crashes (at any step of the Ready hand-off) and restarts, a
toy state machine per node, and the safety checks run after every round.
Never: sleeps, threads, sockets, or randomness not derived from `seed`.

Time: `round()` delivers the messages due now and lets every live node handle
one Ready; `tick()` advances every live node's logical clock by one tick and
runs `rounds_per_tick` rounds. A message sent in round r arrives in round
r + 1 + delay, where delay is drawn from [0, max_delay].

Safety checks (raise SafetyViolation):
- election safety: at most one leader per term (§5.2);
- state machine safety: every node applies the same entry at each index, in
  index order; each node's state is a running digest checked against the first
  node that reached that index (§5.4.3) — so a committed entry that got lost
  shows up as a different entry applied at its index;
- leader completeness: a new leader's log holds every entry applied anywhere (§5.4);
- log matching: same (index, term) implies same entry and same prefix (§5.3);
- ReadIndex safety: a read index is never below what was applied anywhere
  when the read was requested (§6.4).
"""

from __future__ import annotations

import heapq
import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from kvstore.raft import (
    MemoryLogStorage,
    ProposalDropped,
    RaftConfig,
    RaftCore,
    apply_conf_change,
)
from kvstore.raft.errors import Compacted
from kvstore.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Ready,
    Role,
)

# Crash points inside the Ready hand-off (see `_handle_ready`).
CRASH_BEFORE_SEND = 0
CRASH_AFTER_SEND = 1
CRASH_AFTER_PERSIST = 2
CRASH_AFTER_SEND_PERSISTED = 3
CRASH_AFTER_APPLY = 4


class SafetyViolation(AssertionError):
    pass


def _digest(prev: int, e: Entry) -> int:
    return zlib.crc32(b"%d:%d:%d:" % (e.index, e.term, e.type) + e.data, prev)


@dataclass
class SimNode:
    id: int
    storage: MemoryLogStorage
    core: RaftCore | None
    applied_index: int = 0
    digest: int = 0
    applied_conf: ConfState = field(default_factory=ConfState)
    applied_data: list[bytes] = field(default_factory=list)  # since last restart/snapshot
    read_states: list[tuple[bytes, int]] = field(default_factory=list)
    crash_at: int | None = None  # crash point for the next Ready

    @property
    def alive(self) -> bool:
        return self.core is not None


class SimNetwork:
    def __init__(
        self,
        ids: Iterable[int],
        seed: int,
        *,
        voters: Iterable[int] | None = None,
        learners: Iterable[int] = (),
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_size_per_msg: int = 1 << 20,
        max_inflight_msgs: int = 256,
        rounds_per_tick: int = 3,
        compact_every: int = 0,
        compact_keep: int = 5,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.ids = tuple(ids)
        voters = tuple(voters) if voters is not None else self.ids
        self.initial_conf = ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
        self.cfg = dict(
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_size_per_msg=max_size_per_msg,
            max_inflight_msgs=max_inflight_msgs,
        )
        self.rounds_per_tick = rounds_per_tick
        self.compact_every = compact_every
        self.compact_keep = compact_keep
        self.now = 0
        self._seq = 0
        self.queue: list[tuple[int, int, Message]] = []
        self.cuts: set[tuple[int, int]] = set()
        self.drop_rates: dict[tuple[int, int], float] = {}
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.max_delay = 0
        self.nodes: dict[int, SimNode] = {}
        self.leader_of_term: dict[int, int] = {}
        self.applied_digest: dict[int, int] = {}
        self.applied_entry: dict[int, tuple[int, bytes]] = {}
        self.max_applied = 0
        self.data_index: dict[bytes, int] = {}
        self.read_floor: dict[tuple[int, bytes], int] = {}
        self.messages_delivered = 0
        self.filters: list = []  # callables (Message) -> bool: False drops the message
        for i in self.ids:
            storage = MemoryLogStorage(self.initial_conf)
            node = SimNode(i, storage, None, applied_conf=self.initial_conf)
            self.nodes[i] = node
            self._start(node)

    # --- lifecycle ----------------------------------------------------------------------
    def _start(self, node: SimNode) -> None:
        snap = node.storage.snapshot()
        node.applied_index = snap.metadata.index
        node.digest = int.from_bytes(snap.data[:4], "big") if snap.data else 0
        node.applied_conf = node.storage.initial_state()[1]
        node.applied_data = []
        node.crash_at = None
        cfg = RaftConfig(id=node.id, applied=node.applied_index, **self.cfg)
        node.core = RaftCore(cfg, node.storage, random.Random(self.rng.random()))

    def crash(self, i: int) -> None:
        """Stop node i; it keeps only what the driver already wrote to its storage."""
        self.nodes[i].core = None

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.core is None:
            self._start(node)

    def core(self, i: int) -> RaftCore:
        c = self.nodes[i].core
        assert c is not None, f"node {i} is down"
        return c

    # --- faults -------------------------------------------------------------------------
    def cut(self, a: int, b: int, both: bool = True) -> None:
        self.cuts.add((a, b))
        if both:
            self.cuts.add((b, a))

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.cut(i, j)

    def partition(self, *groups: Iterable[int]) -> None:
        gs = [set(g) for g in groups]
        for a in self.ids:
            for b in self.ids:
                if a != b and not any(a in g and b in g for g in gs):
                    self.cuts.add((a, b))

    def heal(self) -> None:
        self.cuts.clear()
        self.drop_rates.clear()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.max_delay = 0
        self.filters.clear()

    def drop(self, a: int, b: int, rate: float) -> None:
        self.drop_rates[(a, b)] = rate

    # --- message delivery ---------------------------------------------------------------
    def send(self, msgs: list[Message]) -> None:
        rng = self.rng
        for m in msgs:
            link = (m.sender, m.to)
            rate = self.drop_rates.get(link, self.drop_rate)
            if (
                link in self.cuts
                or m.to not in self.nodes
                or (rate and rng.random() < rate)
                or (self.filters and not all(f(m) for f in self.filters))
            ):
                if m.type == MessageType.SNAP:
                    self._report_snapshot(m, False)  # the transport saw the send fail
                continue
            copies = 2 if self.dup_rate and rng.random() < self.dup_rate else 1
            for _ in range(copies):
                delay = rng.randint(0, self.max_delay) if self.max_delay else 0
                self._seq += 1
                heapq.heappush(self.queue, (self.now + 1 + delay, self._seq, m))

    def _report_snapshot(self, m: Message, success: bool) -> None:
        sender = self.nodes[m.sender].core
        if sender is not None:
            sender.report_snapshot(m.to, success)

    def round(self) -> None:
        self.now += 1
        q = self.queue
        while q and q[0][0] <= self.now:
            _, _, m = heapq.heappop(q)
            node = self.nodes[m.to]
            if node.core is not None and (m.sender, m.to) not in self.cuts:
                self.messages_delivered += 1
                node.core.step(m)
                if m.type == MessageType.SNAP:
                    self._report_snapshot(m, True)
            elif m.type == MessageType.SNAP:
                self._report_snapshot(m, False)
        for node in self.nodes.values():
            if node.core is not None and node.core.has_ready():
                self._handle_ready(node)
        self.check()

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                if node.core is not None:
                    node.core.tick()
            for _ in range(self.rounds_per_tick):
                self.round()

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Run rounds until no message is in flight and no node has work."""
        for _ in range(max_rounds):
            if not self.queue and not any(
                n.core is not None and n.core.has_ready() for n in self.nodes.values()
            ):
                return
            self.round()
        raise AssertionError(f"network did not go quiet in {max_rounds} rounds (seed {self.seed})")

    # --- the driver: follows the Ready contract ----------------------------------------
    def _handle_ready(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        rd = core.ready()
        crash_at = node.crash_at
        if crash_at == CRASH_BEFORE_SEND:
            return self.crash(node.id)
        self.send(rd.messages)
        if crash_at == CRASH_AFTER_SEND:
            return self.crash(node.id)
        self._persist(node, rd)
        if crash_at == CRASH_AFTER_PERSIST:
            return self.crash(node.id)
        self.send(rd.messages_after_persist)
        if crash_at == CRASH_AFTER_SEND_PERSISTED:
            return self.crash(node.id)
        self._apply(node, rd)
        if crash_at == CRASH_AFTER_APPLY:
            return self.crash(node.id)
        core.advance(rd)

    def _persist(self, node: SimNode, rd: Ready) -> None:
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        if rd.snapshot is not None:
            meta = rd.snapshot.metadata
            digest = int.from_bytes(rd.snapshot.data[:4], "big")
            self._check_digest(node.id, meta.index, digest)
            node.applied_index = meta.index
            node.digest = digest
            node.applied_conf = meta.conf_state
            node.applied_data = []
        for e in rd.committed_entries:
            if e.index <= node.applied_index:
                continue  # already in the state machine (restored from a snapshot)
            if e.index != node.applied_index + 1:
                raise SafetyViolation(
                    f"seed {self.seed}: node {node.id} applies {e.index} after {node.applied_index}"
                )
            node.digest = _digest(node.digest, e)
            node.applied_index = e.index
            self._check_digest(node.id, e.index, node.digest)
            if e.type == EntryType.CONF_CHANGE:
                node.applied_conf = apply_conf_change(node.applied_conf, ConfChange.decode(e.data))
            elif e.data:
                node.applied_data.append(e.data)
            if e.index not in self.applied_entry:
                self.applied_entry[e.index] = (e.term, e.data)
                if e.data:
                    self.data_index.setdefault(e.data, e.index)
        for rs in rd.read_states:
            floor = self.read_floor.pop((node.id, rs.request_ctx), None)
            if floor is not None and rs.index < floor:
                raise SafetyViolation(
                    f"seed {self.seed}: read {rs.request_ctx!r} on {node.id} got index "
                    f"{rs.index} < {floor} applied before the request"
                )
            node.read_states.append((rs.request_ctx, rs.index))
        if self.compact_every and node.applied_index - node.storage.first_index() >= (
            self.compact_every
        ):
            snap_index = node.applied_index
            node.storage.create_snapshot(
                snap_index, node.applied_conf, node.digest.to_bytes(4, "big")
            )
            node.storage.compact(max(0, snap_index - self.compact_keep))

    def _check_digest(self, node_id: int, index: int, digest: int) -> None:
        seen = self.applied_digest.setdefault(index, digest)
        if seen != digest:
            raise SafetyViolation(
                f"seed {self.seed}: node {node_id} state at index {index} differs "
                "from another node's (state machine safety)"
            )
        if index > self.max_applied:
            self.max_applied = index

    # --- client actions -----------------------------------------------------------------
    def leader(self) -> int | None:
        """The live leader with the highest term, if any."""
        best = None
        for n in self.nodes.values():
            c = n.core
            if c is not None and c.role == Role.LEADER and (best is None or c.term > best[0]):
                best = (c.term, n.id)
        return best[1] if best else None

    def propose(self, i: int, data: bytes) -> bool:
        try:
            self.core(i).propose(data)
            return True
        except ProposalDropped:
            return False

    def read_index(self, i: int, ctx: bytes) -> bool:
        self.read_floor[(i, ctx)] = self.max_applied
        try:
            self.core(i).read_index(ctx)
            return True
        except ProposalDropped:
            del self.read_floor[(i, ctx)]
            return False

    def elect(self, i: int, max_rounds: int = 200) -> None:
        """Make node i campaign and run until it is leader with its empty entry applied."""
        self.core(i).campaign()
        self.stabilize(max_rounds)
        assert self.core(i).role == Role.LEADER, f"node {i} failed to become leader"

    # --- safety checks ------------------------------------------------------------------
    def check(self) -> None:
        for n in self.nodes.values():
            c = n.core
            if c is None or c.role != Role.LEADER:
                continue
            prev = self.leader_of_term.setdefault(c.term, n.id)
            if prev != n.id:
                raise SafetyViolation(
                    f"seed {self.seed}: two leaders in term {c.term}: {prev} and {n.id}"
                )
            if getattr(n, "_checked_term", None) != c.term:
                n._checked_term = c.term  # type: ignore[attr-defined]
                self._check_leader_completeness(n)
                self._check_log_matching(n)

    def _check_leader_completeness(self, n: SimNode, window: int = 200) -> None:
        log = n.core.raft_log  # type: ignore[union-attr]
        lo = max(log.first_index(), self.max_applied - window)
        for idx in range(lo, self.max_applied + 1):
            rec = self.applied_entry.get(idx)
            if rec is not None and log.term(idx) != rec[0]:
                raise SafetyViolation(
                    f"seed {self.seed}: leader {n.id} (term {n.core.term}) lacks "  # type: ignore[union-attr]
                    f"committed entry {idx} (leader completeness)"
                )

    def _check_log_matching(self, leader: SimNode, window: int = 64) -> None:
        llog = leader.core.raft_log  # type: ignore[union-attr]
        for n in self.nodes.values():
            if n.core is None or n is leader:
                continue
            log = n.core.raft_log
            hi = min(log.last_index(), llog.last_index())
            lo = max(log.first_index(), llog.first_index(), hi - window)
            same = None
            for idx in range(hi, lo - 1, -1):
                try:
                    if log.term(idx) == llog.term(idx):
                        same = idx
                        break
                except Compacted:
                    break
            if same is None or same < lo:
                continue
            a = log.slice(lo, same + 1)
            b = llog.slice(lo, same + 1)
            if a != b:
                raise SafetyViolation(
                    f"seed {self.seed}: logs of {n.id} and {leader.id} agree on "
                    f"({same}, term) but differ before it (log matching)"
                )

    # --- liveness helpers ---------------------------------------------------------------
    def members(self) -> set[int]:
        """Members of the configuration the newest leader has (else the initial one)."""
        ld = self.leader()
        cs = self.core(ld).conf_state if ld else self.initial_conf
        return set(cs.voters) | set(cs.learners)

    def applied_everywhere(self, data: bytes) -> bool:
        """Every live member has applied the entry carrying `data`."""
        idx = self.data_index.get(data)
        if idx is None:
            return False
        members = self.members()
        return all(
            n.applied_index >= idx
            for n in self.nodes.values()
            if n.core is not None and n.id in members
        )

    def commit_new_entry(self, data: bytes, max_ticks: int = 100) -> int:
        """Heal-time liveness: within `max_ticks`, some leader accepts `data` and every
        live member applies it. Returns the ticks it took."""
        proposed_by: int | None = None
        for t in range(max_ticks):
            ld = self.leader()
            if ld is not None and proposed_by != ld and self.propose(ld, data):
                proposed_by = ld
            self.tick()
            if self.applied_everywhere(data):
                return t + 1
        raise AssertionError(
            f"seed {self.seed}: no commit of {data!r} within {max_ticks} ticks after heal "
            f"(leader {self.leader()}, terms "
            f"{[(n.id, n.core.term, n.core.role.name) for n in self.nodes.values() if n.core]})"
        )
