"""etcdctl 3.4 watch / lease / lock / elect sessions against real etcd and kvstore.

Covers issue 4's etcdctl list: `watch` (--prefix, --rev past and future,
--prev-kv, a key range, -w json live and replayed, a compacted revision,
interactive `watch -i` with `progress`), `lease grant / keep-alive (--once
and running) / timetolive --keys / list / revoke` (also: too large and
below-minimum TTLs, unknown leases, expiry seen by a watcher), `put --lease`
and `--ignore-lease`, `lock` (two contenders: mutual exclusion, then
hand-over on SIGINT; hand-over after the holder is killed and its session
lease expires; lock with a command), `elect` (a leader, observers in simple
and json output, a queued second candidate that takes over).

Each case is a scripted session (a function of a `Session`) run unchanged on
one 3-member cluster per backend (`compat_cluster`, module scope). Long-running
etcdctl processes (watchers, lock holders, candidates) run in the background;
the script waits on their collected output lines (wait_until with deadlines),
never on time. What a case records — foreground outputs, background outputs
once the process has ended, and observations taken mid-way (e.g. "the second
contender has printed nothing while the first holds the lock") — is
normalised and compared with real etcd's, recorded in
fixtures/etcdctl_watch_lease_etcd.json (KVSTORE_REGEN_COMPAT=1 rewrites it
from a live etcd run; every etcd run checks the fixture live).

Normalising masks only what legitimately differs: lease ids become labels in
order of first appearance within the case (<lease0>, ...: "the same lease"
is still checked, in hex text, lock/election keys and JSON ids alike),
revisions are relative to the case's base revision, member/cluster ids and
ports are masked (compat_harness), a remaining TTL a few seconds below the
granted TTL becomes "~<granted>", a lease's attached keys are sorted (etcd
lists them in Go map order), and the leading marker events of watch sync
(below) are dropped.

Watch sync: a watch without --rev starts at the revision current when the
server creates it, so the script puts fresh marker keys (/w/sync/<n>) until
every new watcher has printed one, and drops those leading marker events;
the case's base revision is taken after that.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from compat_harness import ETCDCTL_BIN, Normaliser, current_revision, record_or_compare, run_etcdctl

from kvstore.testing.waiting import wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.e2e, pytest.mark.timeout(300)]

FIXTURE = Path(__file__).parent / "fixtures" / "etcdctl_watch_lease_etcd.json"
WAIT_S = 20.0  # deadline of every wait on a server-driven event
TTL_SLACK_S = 5  # a remaining TTL this much below the granted one is "~granted"
MARKER_TRIES = 20  # bounded marker puts while syncing new watchers


# ------------------------------------------------------------ normalising
_LEASE_HEX = re.compile(r"(?<![0-9a-zA-Z<])[0-9a-f]{10,16}(?![0-9a-zA-Z>])")
_REMAINING = re.compile(r"granted with TTL\((\d+)s\), remaining\((-?\d+)s\)")
# etcd lists a lease's keys in Go map order: compare them as a set.
_ATTACHED = re.compile(r"attached keys\(\[([^\]]*)\]\)")
_PROGRESS = re.compile(r"^progress notify: (\d+)$", re.M)
_LEASE_JSON_IDS = {"id", "ID", "lease"}


class WatchLeaseNormaliser(Normaliser):
    """compat_harness.Normaliser plus lease labels, TTLs and progress revisions."""

    def __init__(self, endpoints: list[str], base: int) -> None:
        super().__init__(endpoints, base)
        self.leases: dict[int, str] = {}

    def lease(self, value: int) -> str:
        return self.leases.setdefault(value, f"<lease{len(self.leases)}>")

    def text(self, text: str) -> str:
        # Leases first: the base class turns any 16-digit hex into <id>.
        text = _LEASE_HEX.sub(lambda m: self.lease(int(m.group(0), 16)), text)
        text = _REMAINING.sub(self._remaining, text)
        text = _ATTACHED.sub(lambda m: f"attached keys([{' '.join(sorted(m.group(1).split()))}])",
                             text)  # fmt: skip
        text = _PROGRESS.sub(lambda m: f"progress notify: {self.rev(int(m.group(1)))}", text)
        return super().text(text)

    @staticmethod
    def _remaining(m: re.Match[str]) -> str:
        return f"granted with TTL({m.group(1)}s), remaining({_ttl(int(m.group(1)), m.group(2))}s)"

    def json_value(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict) and "granted-ttl" in value and "ttl" in value:
            value = {**value, "ttl": _ttl(value["granted-ttl"], value["ttl"])}
            if isinstance(value.get("keys"), list):
                value["keys"] = sorted(value["keys"])
        if key in _LEASE_JSON_IDS and isinstance(value, int):
            return self.lease(value)
        if key == "CompactRevision" and isinstance(value, int):
            return self.rev(value)
        if key == "key" and isinstance(value, str):
            # Lock and election keys end with their session's lease id.
            try:
                decoded = base64.b64decode(value, validate=True).decode(errors="replace")
            except ValueError:  # binascii.Error: not base64, keep as printed
                decoded = ""
            if _LEASE_HEX.search(decoded):
                return f"base64({self.text(decoded)})"
        return super().json_value(value, key)


def _ttl(granted: int, remaining: int | str) -> str | int:
    r = int(remaining)
    # The seconds between grant and read depend on the machine's load.
    return f"~{granted}" if 0 <= granted - r <= TTL_SLACK_S else r


# ------------------------------------------------------------- background
class Bg:
    """A background etcdctl: stdout/stderr lines collected by reader threads."""

    def __init__(self, name: str, endpoints: list[str], args: list[str], stdin: bool) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [ETCDCTL_BIN, "--endpoints", ",".join(endpoints), *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait_lines(self, pred: Callable[[list[str]], bool], what: str) -> None:
        wait_until(lambda: pred(list(self.out)), timeout=WAIT_S, what=f"{self.name}: {what}")

    def finish(self, sig: int | None = signal.SIGINT) -> int:
        """Signal (None: let it end by itself), wait for the exit, drain output."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for t in self._threads:
            t.join(timeout=WAIT_S)
        return rc

    def kill(self) -> None:
        self.close_stdin()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


# ---------------------------------------------------------------- session
@dataclass
class Session:
    """One case on one cluster: runs etcdctl, records normalised results."""

    cluster: Any
    base: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    bgs: list[Bg] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    norm: WatchLeaseNormaliser | None = None

    def __post_init__(self) -> None:
        self.rebase()

    def rebase(self) -> None:
        """Take the current revision as the case's base (REV tokens, output)."""
        self.base = current_revision(self.cluster)
        old = self.norm.leases if self.norm else {}
        self.norm = WatchLeaseNormaliser(self.cluster.endpoints, self.base)
        self.norm.leases = old

    def resolve(self, arg: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("REV"):
                return str(self.base + int(name[3:] or 0))
            return self.values[name]

        return re.sub(r"\{([A-Z0-9_+-]+)\}", sub, arg)

    def ctl(
        self, *args: str, stdin: str | None = None, record: bool = True, member: int | None = None
    ) -> subprocess.CompletedProcess:
        """etcdctl with every endpoint, or only member `member`'s."""
        resolved = [self.resolve(a) for a in args]
        if member is None:
            out = run_etcdctl(self.cluster, resolved, stdin)
        else:
            out = self.cluster.etcdctl(*resolved, endpoints=[self.cluster.endpoints[member]])
        if record:
            where = "" if member is None else f"[member {member}] "
            self.records.append(
                {
                    "step": where + " ".join(args),
                    "rc": out.returncode,
                    "stdout": self.norm.stdout(out.stdout, "plain"),
                    "stderr": self.norm.stderr(out.stderr, "plain"),
                }
            )
        return out

    def bg(self, name: str, *args: str, stdin: bool = False) -> Bg:
        proc = Bg(name, self.cluster.endpoints, [self.resolve(a) for a in args], stdin)
        self.bgs.append(proc)
        return proc

    def check(self, name: str, value: Any) -> None:
        """Record an observation taken mid-case (lines normalised)."""
        if isinstance(value, list):
            value = [self.line(v) for v in value]
        self.records.append({"check": name, "value": value})

    def finish(
        self,
        proc: Bg,
        sig: int | None = signal.SIGINT,
        drop_markers: bool = False,
        collapse: bool = False,
    ) -> None:
        """Stop `proc` and record its whole output. collapse: repeated
        identical lines count once (periodic output whose count is timing)."""
        rc = proc.finish(sig)
        out = strip_markers(proc.out) if drop_markers else proc.out
        lines = [self.line(ln) for ln in out]
        if collapse:
            lines = [ln for i, ln in enumerate(lines) if i == 0 or ln != lines[i - 1]]
        self.records.append(
            {
                "bg": proc.name,
                "rc": rc,
                "stdout": lines,
                "stderr": self.norm.stderr("\n".join(proc.err), "plain"),
            }
        )

    def line(self, line: str) -> Any:
        """One output line: `-w json` prints one JSON object per response."""
        if line.startswith("{"):
            try:
                return self.norm.json_value(json.loads(line))
            except json.JSONDecodeError:
                pass
        return self.norm.text(line)

    def sync_watchers(self, *watchers: Bg) -> None:
        """Put fresh marker keys until every watcher has printed one."""
        for n in range(MARKER_TRIES):
            self.ctl("put", f"/w/sync/{n}", "s", record=False)
            try:
                for w in watchers:
                    wait_until(lambda w=w: any(map(is_marker, w.out)), timeout=1.0,
                               what=f"{w.name} marker")  # fmt: skip
                return
            except AssertionError:
                continue
        raise AssertionError("watchers never printed a marker event")

    def close(self) -> None:
        """Kill every background etcdctl still running (each one, even if
        an earlier kill fails)."""
        errors = []
        for proc in self.bgs:
            try:
                proc.kill()
            except Exception as exc:  # noqa: BLE001 - reported after the others
                errors.append(exc)
        if errors:
            raise errors[0]


MARKER_PREFIX = "/w/sync/"


def is_marker(line: str) -> bool:
    """A line of a marker event: its key (simple) or a response of markers (json)."""
    return line.startswith(MARKER_PREFIX) or _json_marker_response(line)


def _json_marker_response(line: str) -> bool:
    if not line.startswith("{"):
        return False
    try:
        events = json.loads(line).get("Events") or []
    except json.JSONDecodeError:
        return False
    keys = [base64.b64decode(e.get("kv", {}).get("key", "")).decode() for e in events]
    return bool(keys) and all(k.startswith(MARKER_PREFIX) for k in keys)


def strip_markers(lines: list[str]) -> list[str]:
    """Drop the leading marker events of sync_watchers (PUT /w/sync/<n> s in
    simple output, one response line per marker in json output)."""
    i = 0
    while True:
        if lines[i : i + 1] == ["PUT"] and lines[i + 1 : i + 2] and is_marker(lines[i + 1]):
            i += 3
        elif lines[i : i + 1] and _json_marker_response(lines[i]):
            i += 1
        else:
            return lines[i:]


def ends_with_event(key: str, value: str) -> Callable[[list[str]], bool]:
    return lambda lines: lines[-3:] == ["PUT", key, value]


# ------------------------------------------------------------------ cases
def case_lease(s: Session) -> None:
    out = s.ctl("lease", "grant", "60")
    s.values["L"] = out.stdout.split()[1]
    s.ctl("put", "--lease={L}", "/l/k", "v")
    s.ctl("put", "/l/k2", "v2", "--lease", "{L}")
    s.ctl("lease", "timetolive", "{L}", "--keys")
    s.ctl("lease", "timetolive", "{L}")
    s.ctl("lease", "timetolive", "{L}", "--keys", "-w", "json")
    s.ctl("lease", "list")
    s.ctl("lease", "list", "-w", "json")
    s.ctl("lease", "keep-alive", "--once", "{L}")
    s.ctl("lease", "keep-alive", "--once", "{L}", "-w", "json")
    s.ctl("get", "/l/", "--prefix", "-w", "json")
    # Through each member alone (two are followers: they forward to the leader).
    for i in range(len(s.cluster.endpoints)):
        s.ctl("lease", "keep-alive", "--once", "{L}", member=i)
        s.ctl("lease", "timetolive", "{L}", "--keys", member=i)
        s.ctl("lease", "list", member=i)
    # --ignore-lease keeps the key's lease; a plain put detaches it.
    s.ctl("put", "/l/k", "v1b", "--ignore-lease")
    s.ctl("put", "/l/k2", "v2b")
    s.ctl("lease", "timetolive", "{L}", "--keys")
    s.ctl("get", "/l/", "--prefix", "-w", "json")
    s.ctl("lease", "revoke", "{L}")
    s.ctl("get", "/l/k")
    s.ctl("get", "/l/", "--prefix", "--keys-only")
    s.ctl("lease", "timetolive", "{L}", "--keys")
    s.ctl("lease", "revoke", "{L}")
    s.ctl("lease", "keep-alive", "--once", "{L}")
    s.ctl("put", "--lease=1234abcd", "/l/k3", "v")
    s.ctl("put", "/l/k2", "v2c", "--ignore-lease")
    s.ctl("put", "/l/absent", "v", "--ignore-lease")
    s.ctl("lease", "timetolive", "1234abcd")
    s.ctl("lease", "grant", "9000000001")
    s.ctl("lease", "list")
    # A running keep-alive ends when its lease is revoked elsewhere.
    out = s.ctl("lease", "grant", "6")
    s.values["K"] = out.stdout.split()[1]
    keeper = s.bg("keep_alive", "lease", "keep-alive", "{K}")
    keeper.wait_lines(lambda lines: len(lines) >= 1, "the first keepalive")
    s.ctl("lease", "revoke", "{K}")
    s.finish(keeper, sig=None, collapse=True)
    # Expiry: the leader revokes the lease, a watcher sees the key deleted.
    out = s.ctl("lease", "grant", "2")
    s.values["X"] = out.stdout.split()[1]
    out = s.ctl("put", "/l/exp", "v", "--lease={X}", "-w", "json")
    s.values["PUT_REV"] = str(json.loads(out.stdout)["header"]["revision"])
    expiry = s.bg("watch_expiry", "watch", "/l/exp", "--rev", "{PUT_REV}")
    expiry.wait_lines(lambda lines: "DELETE" in lines, "the expiry delete")
    s.finish(expiry, signal.SIGKILL)
    s.ctl("get", "/l/exp")
    s.ctl("lease", "timetolive", "{X}", "--keys")
    for ttl in ("1", "0"):  # below the minimum TTL: granted the minimum
        out = s.ctl("lease", "grant", ttl)
        s.values["M"] = out.stdout.split()[1]
        s.ctl("lease", "revoke", "{M}")


def case_watch(s: Session) -> None:
    plain = s.bg("watch_prefix", "watch", "--prefix", "/w/")
    prev = s.bg("watch_prefix_prev_kv", "watch", "--prefix", "/w/", "--prev-kv")
    # Live responses in json: one per revision (the txn's two events share one).
    live = s.bg("watch_json_live", "watch", "--prefix", "/w/", "--prev-kv", "-w", "json")
    s.sync_watchers(plain, prev, live)
    s.rebase()
    # From a future revision: nothing before it, whenever the watch is made.
    future = s.bg("watch_future_rev", "watch", "--prefix", "/w/", "--rev", "{REV+5}")
    s.ctl("put", "/w/a", "1")
    s.ctl("put", "/w/a", "2")
    s.ctl("put", "/wx/outside", "9")
    s.ctl("del", "/w/a")
    s.ctl("put", "/w/b", "3")
    s.ctl("txn", stdin='value("/w/b") = "3"\n\nput /w/c 4\ndel /w/b\n\n\n')
    s.ctl("put", "/w/c2", "5")
    s.ctl("del", "/w/c", "/w/d")
    s.ctl("put", "/w/zend", "done")
    # Started after the writes: history replay from a revision.
    hist = s.bg("watch_rev_prev_kv", "watch", "--prefix", "/w/", "--rev", "{REV+1}", "--prev-kv")
    single = s.bg("watch_key_rev", "watch", "/w/a", "--rev", "{REV+2}")
    ranged = s.bg("watch_range_rev", "watch", "/w/b", "/w/d", "--rev", "{REV+1}")
    # One JSON line per watch response: how history is batched into
    # responses, and every event field (versions, revisions, prev_kv).
    js = s.bg("watch_json_history", "watch", "--prefix", "/w/", "--rev", "{REV+1}", "--prev-kv",
              "-w", "json")  # fmt: skip
    for w in (js, live):
        w.wait_lines(lambda lines: bool(lines) and "L3cvemVuZA==" in lines[-1], "the end marker")
    for w in (plain, prev, hist, future):
        w.wait_lines(ends_with_event("/w/zend", "done"), "the end marker")
    # /w/a's last event (its delete) is followed by nothing: wait for it.
    single.wait_lines(lambda lines: lines[-3:-1] == ["DELETE", "/w/a"], "the delete of /w/a")
    ranged.wait_lines(lambda lines: lines.count("DELETE") == 3, "three deletes")
    s.finish(plain, signal.SIGKILL, drop_markers=True)
    s.finish(prev, signal.SIGKILL, drop_markers=True)
    s.finish(live, signal.SIGKILL, drop_markers=True)
    for w in (hist, single, ranged, js, future):
        s.finish(w, signal.SIGKILL)
    # A watch from a compacted revision is canceled by the server.
    s.ctl("compaction", "{REV+3}")
    s.ctl("watch", "/w/a", "--rev", "{REV+2}")
    s.ctl("watch", "/w/a", "--rev", "{REV+2}", "-w", "json")


def case_watch_interactive(s: Session) -> None:
    w = s.bg("watch_i", "watch", "-i", stdin=True)
    w.send("watch /wi/a")
    # The progress request follows the watch creation on the same stream:
    # its answer means the watch exists (then the put below is seen).
    w.send("progress")
    w.wait_lines(lambda lines: any(ln.startswith("progress notify:") for ln in lines), "progress")
    # /wi/a last: once its event is printed, the member serving the watch
    # has applied both puts, so the next progress revision is REV+2.
    s.ctl("put", "/wi/b", "other")
    s.ctl("put", "/wi/a", "v1")
    w.wait_lines(lambda lines: "v1" in lines, "the put")
    w.send("progress")
    w.wait_lines(lambda lines: sum(ln.startswith("progress") for ln in lines) == 2, "progress 2")
    w.send(s.resolve("watch /wi/ --prefix --rev {REV+1} --prev-kv"))
    w.wait_lines(lambda lines: lines.count("v1") == 2, "the second watch's replay")
    # Both watchers get the progress notification.
    w.send("progress")
    w.wait_lines(lambda lines: sum(ln.startswith("progress") for ln in lines) == 4, "progress 4")
    # A watch from a compacted revision is canceled; the session goes on.
    s.ctl("compaction", "{REV+2}")
    w.send(s.resolve("watch /wi/a --rev {REV+1}"))
    wait_until(lambda: any("canceled" in ln for ln in w.err), timeout=WAIT_S, what="cancel")
    s.check("lines_before_eof", list(w.out))
    w.send("bogus")
    w.close_stdin()  # EOF ends etcdctl watch -i with an error
    s.finish(w, sig=None)
    # The same in json: progress responses and events as whole responses.
    wj = s.bg("watch_i_json", "watch", "-i", "-w", "json", stdin=True)
    wj.send("watch /wi/a --prev-kv")
    wj.send("progress")
    wj.wait_lines(lambda lines: any(ln.startswith("progress notify:") for ln in lines), "progress")
    s.ctl("put", "/wi/a", "v2")
    wj.wait_lines(lambda lines: any("djI=" in ln for ln in lines), "the put")  # base64("v2")
    wj.send("progress")
    wj.wait_lines(lambda lines: sum(ln.startswith("progress") for ln in lines) == 2, "progress 2")
    s.check("json_lines_before_eof", list(wj.out))
    wj.close_stdin()
    s.finish(wj, sig=None)


def case_lock(s: Session) -> None:
    first = s.bg("lock_first", "lock", "/lk/L")
    first.wait_lines(lambda lines: len(lines) >= 2, "the first holder's key")
    second = s.bg("lock_second", "lock", "/lk/L")

    def waiters() -> int:
        out = s.ctl("get", "/lk/L/", "--prefix", "--keys-only", record=False).stdout
        return len(out.split())

    wait_until(lambda: waiters() == 2, timeout=WAIT_S, what="the second contender's key")
    s.check("second_output_while_first_holds", list(second.out))
    s.finish(first)  # SIGINT: etcdctl unlocks and closes its session
    second.wait_lines(lambda lines: len(lines) >= 2, "the hand-over")
    s.ctl("get", "/lk/L/", "--prefix", "--keys-only")
    s.finish(second)
    s.ctl("get", "/lk/L/", "--prefix", "--keys-only")
    s.ctl("lock", "/lk/C", "--", "sh", "-c", 'echo "key=$ETCD_LOCK_KEY"')
    # A holder killed outright: its session lease expires, then hand-over.
    dead = s.bg("lock_killed_holder", "lock", "--ttl", "2", "/lk/T")
    dead.wait_lines(lambda lines: len(lines) >= 2, "the holder's key")
    heir = s.bg("lock_heir", "lock", "--ttl", "2", "/lk/T")
    wait_until(lambda: len(s.ctl("get", "/lk/T/", "--prefix", "--keys-only", record=False)
                          .stdout.split()) == 2, timeout=WAIT_S, what="the heir's key")  # fmt: skip
    s.check("heir_output_while_holder_lives", list(heir.out))
    s.finish(dead, signal.SIGKILL)
    heir.wait_lines(lambda lines: len(lines) >= 2, "the hand-over after expiry")
    s.finish(heir)
    s.ctl("get", "/lk/T/", "--prefix", "--keys-only")


def case_elect(s: Session) -> None:
    # Observing before there is a leader: printed once one is elected.
    early = s.bg("observer_early_json", "elect", "-l", "/el/E", "-w", "json")
    leader = s.bg("elect_first", "elect", "/el/E", "first")
    leader.wait_lines(lambda lines: lines[-1:] == ["first"], "the first leader")
    observer = s.bg("observer", "elect", "-l", "/el/E")
    observer.wait_lines(lambda lines: lines[-1:] == ["first"], "the observed leader")
    # The json observer prints whole Range responses (lease, revisions).
    jobs = s.bg("observer_json", "elect", "-l", "/el/E", "-w", "json")
    jobs.wait_lines(lambda lines: len(lines) == 1, "the observed leader (json)")
    second = s.bg("elect_second", "elect", "/el/E", "second")

    def candidates() -> int:
        out = s.ctl("get", "/el/E/", "--prefix", "--keys-only", record=False).stdout
        return len(out.split())

    wait_until(lambda: candidates() == 2, timeout=WAIT_S, what="the second candidate's key")
    s.check("second_output_while_first_leads", list(second.out))
    s.finish(leader)  # SIGINT: etcdctl resigns
    second.wait_lines(lambda lines: lines[-1:] == ["second"], "the second leader")
    observer.wait_lines(lambda lines: lines[-1:] == ["second"], "the observed hand-over")
    jobs.wait_lines(lambda lines: len(lines) == 2, "the observed hand-over (json)")
    early.wait_lines(lambda lines: len(lines) == 2, "the early observer's hand-over")
    s.ctl("get", "/el/E/", "--prefix")
    # Observers first: while they sit in a watch on the leader's key, SIGINT
    # ends them cleanly (after a resignation they would be in a Get, and
    # cancelling it makes etcdctl log a warning, on etcd as on kvstore).
    s.finish(observer)
    s.finish(jobs)
    s.finish(early)
    s.finish(second)
    s.ctl("get", "/el/E/", "--prefix")


CASES: dict[str, Callable[[Session], None]] = {
    "lease": case_lease,
    "watch": case_watch,
    "watch_interactive": case_watch_interactive,
    "lock": case_lock,
    "elect": case_elect,
}


def run_session(cluster: Any, case: Callable[[Session], None]) -> list[dict[str, Any]]:
    s = Session(cluster)
    try:
        case(s)
    finally:
        s.close()
    return s.records


def diff(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> list[str]:
    problems = [
        f"record {i}:\n  expected (etcd): {json.dumps(e)}\n  actual:          {json.dumps(a)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=False))
        if e != a
    ]
    if len(expected) != len(actual):
        problems.append(f"record count differs: {len(expected)} vs {len(actual)}")
    return problems


@pytest.mark.parametrize("name", list(CASES))
def test_etcdctl_watch_lease_matches_etcd(compat_cluster, name: str) -> None:
    backend, cluster = compat_cluster
    actual = run_session(cluster, CASES[name])
    expected = record_or_compare(backend, FIXTURE, name, actual)
    problems = diff(expected, actual)
    assert not problems, f"{backend} differs from etcd in case {name}:\n" + "\n".join(problems)
