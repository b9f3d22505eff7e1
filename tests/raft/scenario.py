"""A tiny command language over SimNetwork for transcript tests (tests/raft/scenarios/).

Each scenario file is a list of commands; after each command the interpreter
prints what changed. The file stores the commands and their expected output:

    > campaign 1
    1: LEADER term=1 lead=1 commit=1 last=1
    ...

Lines starting with `>` are commands; everything else is expected output, `#`
lines are comments. Regenerate with RAFT_REGEN=1 and review the diff.

Commands: nodes <ids...> [prevote=0|1] [checkquorum=0|1] [seed=N]; tick [n];
campaign <id>; propose <id> <data>; read <id> <ctx>; transfer <leader> <target>;
addlearner|addnode|remove <leader> <id>; stabilize; partition <a,b> <c,d>;
isolate <id>; cut <a> <b>; heal; crash <id>; restart <id>; status.
"""

from __future__ import annotations

from kvstore.raft import ProposalDropped
from kvstore.raft.types import ConfChange, ConfChangeType

from .sim import SimNetwork


class Interpreter:
    def __init__(self) -> None:
        self.net: SimNetwork | None = None
        self._last: dict[int, str] = {}

    def run(self, line: str) -> list[str]:
        words = line.split()
        cmd, args = words[0], words[1:]
        handler = getattr(self, "cmd_" + cmd, None)
        if handler is None:
            return [f"error: unknown command {cmd}"]
        out = handler(*args) or []
        return out + self._changes()

    def _changes(self) -> list[str]:
        if self.net is None:
            return []
        out = []
        for i, n in sorted(self.net.nodes.items()):
            if n.core is None:
                line = f"{i}: down"
            else:
                c = n.core
                conf = c.conf_state
                members = " ".join(map(str, conf.voters))
                if conf.learners:
                    members += " learners " + " ".join(map(str, conf.learners))
                line = (
                    f"{i}: {c.role.name} term={c.term} lead={c.leader_id} "
                    f"commit={c.commit_index} applied={n.applied_index} last={c.last_index} "
                    f"conf=[{members}]"
                )
            if self._last.get(i) != line:
                out.append(line)
                self._last[i] = line
        return out

    # --- commands -------------------------------------------------------------------------
    def cmd_nodes(self, *args: str) -> list[str]:
        ids = [int(a) for a in args if "=" not in a]
        opts = dict(a.split("=") for a in args if "=" in a)
        self.net = SimNetwork(
            ids,
            int(opts.get("seed", "1")),
            voters=[int(v) for v in opts["voters"].split(",")] if "voters" in opts else None,
            pre_vote=opts.get("prevote", "1") == "1",
            check_quorum=opts.get("checkquorum", "1") == "1",
        )
        self._last = {}
        return []

    def cmd_tick(self, n: str = "1") -> None:
        self.net.tick(int(n))

    def cmd_stabilize(self) -> None:
        self.net.stabilize()

    def cmd_campaign(self, i: str) -> None:
        self.net.core(int(i)).campaign()
        self.net.stabilize()

    def cmd_propose(self, i: str, data: str) -> list[str]:
        ok = self.net.propose(int(i), data.encode())
        self.net.stabilize()
        return [] if ok else [f"proposal {data} dropped"]

    def cmd_read(self, i: str, ctx: str) -> list[str]:
        if not self.net.read_index(int(i), ctx.encode()):
            return [f"read {ctx} refused"]
        self.net.stabilize()
        states = [f"{c.decode()}@{idx}" for c, idx in self.net.nodes[int(i)].read_states]
        return [f"read states on {i}: {' '.join(states) or '-'}"]

    def cmd_transfer(self, leader: str, target: str) -> None:
        self.net.core(int(leader)).transfer_leadership(int(target))
        self.net.stabilize()

    def _conf(self, kind: ConfChangeType, leader: str, node: str) -> list[str]:
        try:
            self.net.core(int(leader)).propose_conf_change(ConfChange(kind, int(node)))
        except ProposalDropped as e:
            return [f"conf change refused: {e.reason}"]
        self.net.stabilize()
        return []

    def cmd_addlearner(self, leader: str, node: str) -> list[str]:
        return self._conf(ConfChangeType.ADD_LEARNER_NODE, leader, node)

    def cmd_addnode(self, leader: str, node: str) -> list[str]:
        return self._conf(ConfChangeType.ADD_NODE, leader, node)

    def cmd_remove(self, leader: str, node: str) -> list[str]:
        return self._conf(ConfChangeType.REMOVE_NODE, leader, node)

    def cmd_partition(self, *groups: str) -> None:
        self.net.partition(*[[int(x) for x in g.split(",")] for g in groups])

    def cmd_isolate(self, i: str) -> None:
        self.net.isolate(int(i))

    def cmd_cut(self, a: str, b: str) -> None:
        self.net.cut(int(a), int(b), both=False)

    def cmd_heal(self) -> None:
        self.net.heal()

    def cmd_crash(self, i: str) -> None:
        self.net.crash(int(i))

    def cmd_restart(self, i: str) -> None:
        self.net.restart(int(i))

    def cmd_status(self) -> list[str]:
        self._last = {}
        return []


def run_script(text: str) -> str:
    """Execute the commands in `text`; return the text with regenerated output."""
    interp = Interpreter()
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith(">"):
            out.append(line)
            out.extend(interp.run(line[1:].strip()))
        elif line.startswith("#") or not line.strip():
            out.append(line)
    return "\n".join(out) + "\n"
