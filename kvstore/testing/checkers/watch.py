"""Watch guarantees checked over recorded watch streams (etcd robustness's set).

Owns: the reference event log (the union of what every watch saw, checked for
agreement and against the KV history) and the per-watch guarantees:

- ordered:   event revisions never go back; a later response's revisions are
             above every earlier response's;
- unique:    no (revision, key) delivered twice (also across a resume);
- atomic:    all events of one revision that match the watch arrive in one
             response;
- reliable:  from the start revision up to the last revision the watch has
             vouched for (last event or progress notification), no matching
             event of the log is missing; with `resumed` segments this is
             also "resumable" (restart from last+1 sees exactly the rest);
- progress:  a progress notification at revision P is never ahead of the
             events: no event with revision <= P arrives after it;
- prev_kv:   with prev_kv, each event carries the key's previous state;
- kv:        a PUT's version / create_revision follow from the previous event;
- compacted: a watch (re)started at S after a compaction at C > S completed
             never delivers an event below C.

Never: talks to a server or reads a clock; every input is plain data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PUT = "PUT"
DELETE = "DELETE"


@dataclass(frozen=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    type: str  # PUT | DELETE
    kv: KV  # for DELETE: key and mod_revision (the delete's revision) only
    prev_kv: KV | None = None

    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    def same_change(self, other: Event) -> bool:
        """Equal ignoring prev_kv (which only prev_kv watches carry)."""
        if self.type != other.type or self.kv.key != other.kv.key:
            return False
        if self.type == DELETE:
            return self.kv.mod_revision == other.kv.mod_revision
        return self.kv == other.kv


@dataclass
class Response:
    time: float
    header_revision: int
    events: tuple[Event, ...] = ()
    progress: bool = False  # a progress notification (no events, not created/canceled)
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    segment: int = 0  # index into WatchRecord.segments (which stream carried it)


@dataclass
class Segment:
    """One stream of a logical watch: opened at `time` from `start_revision`."""

    time: float
    start_revision: int


@dataclass
class WatchRecord:
    name: str
    key: bytes
    range_end: bytes  # b"" = the single key; b"\0" = every key >= key
    prev_kv: bool
    segments: list[Segment]
    responses: list[Response] = field(default_factory=list)
    covers_all: bool = False  # sees every key the workload writes

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    @property
    def start_revision(self) -> int:
        return self.segments[0].start_revision

    def events(self) -> list[tuple[Response, Event]]:
        return [(r, e) for r in self.responses for e in r.events]

    def vouched_revision(self) -> int:
        """The highest revision up to which this watch claims completeness."""
        top = self.start_revision - 1
        for r in self.responses:
            for e in r.events:
                top = max(top, e.revision)
            if r.progress:
                top = max(top, r.header_revision)
        return top


@dataclass(frozen=True)
class Violation:
    check: str
    watch: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.check}] watch {self.watch}: {self.detail}"


@dataclass(frozen=True)
class Write:
    """A write the KV history says happened: key, revision, and the value
    (None for a delete). Used to cross-check the event log."""

    key: bytes
    revision: int
    value: bytes | None


@dataclass(frozen=True)
class Compaction:
    revision: int
    completed: float  # time the Compact call returned


EventLog = dict[int, dict[bytes, Event]]


def build_log(watches: Sequence[WatchRecord]) -> tuple[EventLog, list[Violation]]:
    """The union of all watches' events by revision; disagreement is a violation."""
    log: EventLog = defaultdict(dict)
    out: list[Violation] = []
    for w in watches:
        for _, e in w.events():
            have = log[e.revision].get(e.key)
            if have is None:
                log[e.revision][e.key] = Event(e.type, e.kv)
            elif not have.same_change(e):
                out.append(
                    Violation("agree", w.name, f"revision {e.revision}: {e} vs {have} elsewhere")
                )
    return dict(log), out


def check_watches(
    watches: Sequence[WatchRecord],
    writes: Iterable[Write] = (),
    compactions: Iterable[Compaction] = (),
    log_complete_from: int | None = None,
) -> list[Violation]:
    """All guarantees for all watches. `writes`: completed writes of the KV
    history (with their revisions); `log_complete_from`: the revision from
    which the union log is known to hold every event (e.g. 2 when a
    covers-all watch started at revision 1); None = unknown, which limits
    the prev_kv / kv checks to keys whose previous event is in the log."""
    log, out = build_log(watches)
    compactions = list(compactions)
    for w in watches:
        out += _ordered_unique(w)
        out += _atomic(w, log)
        out += _reliable(w, log)
        out += _progress(w)
        out += _compacted(w, compactions)
        if w.prev_kv:
            out += _prev_kv(w, log, log_complete_from)
        if w.covers_all:
            out += _contiguous(w)
    out += _kv_fields(log, log_complete_from)
    out += _writes_in_log(watches, log, writes)
    return out


def _ordered_unique(w: WatchRecord) -> list[Violation]:
    out: list[Violation] = []
    seen: set[tuple[int, bytes]] = set()
    prev_top = 0
    for r in w.responses:
        revs = [e.revision for e in r.events]
        if revs != sorted(revs):
            out.append(
                Violation("ordered", w.name, f"revisions out of order in one response: {revs}")
            )
        if revs and revs[0] <= prev_top:
            out.append(
                Violation(
                    "ordered",
                    w.name,
                    f"response at t={r.time:.6f} starts at revision {revs[0]}"
                    f" after revision {prev_top}",
                )
            )
        if revs and r.header_revision < revs[-1]:
            out.append(
                Violation(
                    "ordered",
                    w.name,
                    f"header revision {r.header_revision} < event revision {revs[-1]}",
                )
            )
        for e in r.events:
            if (e.revision, e.key) in seen:
                out.append(
                    Violation("unique", w.name, f"event delivered twice: {e.key!r}@{e.revision}")
                )
            seen.add((e.revision, e.key))
            if not w.matches(e.key):
                out.append(
                    Violation("filter", w.name, f"event for a key outside the watch: {e.key!r}")
                )
        if revs:
            prev_top = max(prev_top, revs[-1])
    return out


def _atomic(w: WatchRecord, log: EventLog) -> list[Violation]:
    out: list[Violation] = []
    where: dict[int, int] = {}  # revision -> index of the response carrying it
    for i, r in enumerate(w.responses):
        for e in r.events:
            if where.setdefault(e.revision, i) != i:
                out.append(
                    Violation("atomic", w.name, f"revision {e.revision} split over responses")
                )
    for rev, i in where.items():
        got = {e.key for e in w.responses[i].events if e.revision == rev}
        want = {k for k in log.get(rev, {}) if w.matches(k)}
        if got != want:
            out.append(
                Violation(
                    "atomic",
                    w.name,
                    f"revision {rev}: response has keys {sorted(got)}, revision has {sorted(want)}",
                )
            )
    return out


def _reliable(w: WatchRecord, log: EventLog) -> list[Violation]:
    got = {(e.revision, e.key) for _, e in w.events()}
    top = w.vouched_revision()
    missing = sorted(
        (rev, key)
        for rev, events in log.items()
        if w.start_revision <= rev <= top
        for key in events
        if w.matches(key) and (rev, key) not in got
    )
    if not missing:
        return []
    return [
        Violation(
            "reliable",
            w.name,
            f"{len(missing)} events missing between start {w.start_revision} and {top}, "
            f"first {missing[:5]}",
        )
    ]


def _progress(w: WatchRecord) -> list[Violation]:
    out: list[Violation] = []
    notified = 0
    for r in w.responses:
        for e in r.events:
            if e.revision <= notified:
                out.append(
                    Violation(
                        "progress",
                        w.name,
                        f"event {e.key!r}@{e.revision} after a progress notification at {notified}",
                    )
                )
        if r.progress:
            notified = max(notified, r.header_revision)
    return out


def _compacted(w: WatchRecord, compactions: list[Compaction]) -> list[Violation]:
    out: list[Violation] = []
    for r in w.responses:
        seg = w.segments[r.segment]
        floor = max(
            (
                c.revision
                for c in compactions
                if c.completed < seg.time and c.revision > seg.start_revision
            ),
            default=0,
        )
        for e in r.events:
            if e.revision < floor:
                out.append(
                    Violation(
                        "compacted",
                        w.name,
                        f"event {e.key!r}@{e.revision} from a stream opened at revision "
                        f"{seg.start_revision} after compaction to {floor}",
                    )
                )
    return out


def _previous(
    log: EventLog, key: bytes, rev: int, complete_from: int | None, history: dict[bytes, list[int]]
) -> tuple[bool, Event | None]:
    """(known, the key's last event before `rev`) from the log."""
    revs = history.get(key, [])
    before = [r for r in revs if r < rev]
    if before:
        return True, log[before[-1]][key]
    return (complete_from is not None and complete_from <= 2), None


def _key_history(log: EventLog) -> dict[bytes, list[int]]:
    history: dict[bytes, list[int]] = defaultdict(list)
    for rev in sorted(log):
        for key in log[rev]:
            history[key].append(rev)
    return history


def _prev_kv(w: WatchRecord, log: EventLog, complete_from: int | None) -> list[Violation]:
    out: list[Violation] = []
    history = _key_history(log)
    for _, e in w.events():
        known, prev = _previous(log, e.key, e.revision, complete_from, history)
        if not known:
            continue
        want = prev.kv if prev is not None and prev.type == PUT else None
        if e.prev_kv != want:
            out.append(
                Violation(
                    "prev_kv",
                    w.name,
                    f"{e.type} {e.key!r}@{e.revision}: prev_kv {e.prev_kv}, expected {want}",
                )
            )
    return out


def _kv_fields(log: EventLog, complete_from: int | None) -> list[Violation]:
    out: list[Violation] = []
    history = _key_history(log)
    for rev in sorted(log):
        for key, e in log[rev].items():
            if e.type != PUT:
                continue
            known, prev = _previous(log, key, rev, complete_from, history)
            if not known:
                continue
            if prev is not None and prev.type == PUT:
                want = (prev.kv.create_revision, prev.kv.version + 1)
            else:
                want = (rev, 1)
            if (e.kv.create_revision, e.kv.version) != want:
                out.append(
                    Violation(
                        "kv",
                        "*",
                        f"{key!r}@{rev}: create_revision/version "
                        f"{(e.kv.create_revision, e.kv.version)}, expected {want}",
                    )
                )
    return out


def _contiguous(w: WatchRecord) -> list[Violation]:
    revs = sorted({e.revision for _, e in w.events()})
    if not revs:
        return []
    start = max(w.start_revision, 2)
    gaps = sorted(set(range(start, revs[-1] + 1)) - set(revs))
    if not gaps:
        return []
    return [
        Violation("reliable", w.name, f"revisions with no event on a covers-all watch: {gaps[:10]}")
    ]


def _writes_in_log(
    watches: Sequence[WatchRecord], log: EventLog, writes: Iterable[Write]
) -> list[Violation]:
    """Every completed write appears in the log, as what the client wrote,
    whenever some watch vouched for its revision and key."""
    out: list[Violation] = []
    spans = [(w, w.start_revision, w.vouched_revision()) for w in watches]
    for wr in writes:
        witness = next(
            (w for w, lo, hi in spans if lo <= wr.revision <= hi and w.matches(wr.key)), None
        )
        if witness is None:
            continue
        e = log.get(wr.revision, {}).get(wr.key)
        if e is None:
            out.append(
                Violation(
                    "reliable",
                    witness.name,
                    f"acknowledged write {wr.key!r}@{wr.revision} has no event",
                )
            )
        elif (e.type == DELETE) != (wr.value is None) or (
            wr.value is not None and e.kv.value != wr.value
        ):
            out.append(
                Violation(
                    "agree",
                    witness.name,
                    f"write {wr.key!r}@{wr.revision}={wr.value!r} but event {e}",
                )
            )
    return out
