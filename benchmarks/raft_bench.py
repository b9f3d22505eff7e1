"""Raft core throughput: committed entries per second on a 3-node in-memory cluster.

No I/O: messages are handed straight to the peer's `step`, storage is
MemoryLogStorage. The driver follows the Ready contract (send, persist, send
after-persist, apply, advance). Measures the consensus core alone, i.e. the
ceiling the node layer works under.

    python benchmarks/raft_bench.py [--entries 200000] [--batch 256] [--payload 100]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvstore.raft import MemoryLogStorage, RaftConfig, RaftCore  # noqa: E402
from kvstore.raft.types import ConfState, Message, Role  # noqa: E402


class Cluster:
    def __init__(self, n: int = 3) -> None:
        ids = list(range(1, n + 1))
        conf = ConfState(voters=tuple(ids))
        self.storages = {i: MemoryLogStorage(conf) for i in ids}
        self.cores = {
            i: RaftCore(RaftConfig(id=i), self.storages[i], random.Random(i)) for i in ids
        }
        self.applied = dict.fromkeys(ids, 0)
        self.outbox: list[Message] = []

    def pump(self) -> bool:
        """One round: every node handles its Ready, then all messages are delivered."""
        worked = False
        for i, core in self.cores.items():
            if not core.has_ready():
                continue
            worked = True
            rd = core.ready()
            self.outbox.extend(rd.messages)
            st = self.storages[i]
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            self.outbox.extend(rd.messages_after_persist)
            if rd.committed_entries:
                self.applied[i] = rd.committed_entries[-1].index
            core.advance(rd)
        msgs, self.outbox = self.outbox, []
        for m in msgs:
            self.cores[m.to].step(m)
        return worked or bool(msgs)


def run(entries: int, batch: int, payload: int) -> tuple[float, int]:
    c = Cluster()
    leader = c.cores[1]
    leader.campaign()
    while c.pump():
        pass
    assert leader.role == Role.LEADER
    base = c.applied[1]
    data = b"x" * payload
    proposed = 0
    start = time.perf_counter()
    while c.applied[1] - base < entries or any(v < c.applied[1] for v in c.applied.values()):
        n = min(batch, entries - proposed)
        for _ in range(n):
            leader.propose(data)
        proposed += n
        c.pump()
    elapsed = time.perf_counter() - start
    return elapsed, c.applied[1] - base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=256, help="proposals per round")
    ap.add_argument("--payload", type=int, default=100, help="bytes per entry")
    args = ap.parse_args()
    elapsed, committed = run(args.entries, args.batch, args.payload)
    print(
        f"3-node in-memory cluster: {committed} entries committed and applied on all nodes "
        f"in {elapsed:.2f}s = {committed / elapsed:,.0f} entries/s "
        f"(batch {args.batch}, payload {args.payload} B)"
    )
    elapsed1, committed1 = run(min(args.entries, 20_000), 1, args.payload)
    print(f"one proposal per round (no batching): {committed1 / elapsed1:,.0f} entries/s")


if __name__ == "__main__":
    main()
