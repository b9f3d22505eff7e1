"""Watch and lease checkers: correct streams pass; each broken guarantee is
reported under its own name."""

from __future__ import annotations

from dataclasses import replace

from kvstore.testing.checkers.lease import LeaseRecord, Observation, Renewal, check_lease
from kvstore.testing.checkers.watch import (
    DELETE,
    KV,
    PUT,
    Compaction,
    Event,
    Response,
    Segment,
    WatchRecord,
    Write,
    check_watches,
)


def put(key: bytes, value: bytes, rev: int, create: int, version: int, prev: KV | None = None):
    return Event(PUT, KV(key, value, rev, create, version), prev)


def delete(key: bytes, rev: int, prev: KV | None = None):
    return Event(DELETE, KV(key, b"", rev, 0, 0), prev)


# The story: rev 2 put a=1, rev 3 put b=1, rev 4 txn (put a=2, put b=2), rev 5 del a.
A1 = KV(b"a", b"1", 2, 2, 1)
B1 = KV(b"b", b"1", 3, 3, 1)
A2 = KV(b"a", b"2", 4, 2, 2)
B2 = KV(b"b", b"2", 4, 3, 2)
E2 = Event(PUT, A1)
E3 = Event(PUT, B1)
E4a = Event(PUT, A2, A1)
E4b = Event(PUT, B2, B1)
E5 = Event(DELETE, KV(b"a", b"", 5, 0, 0), A2)
WRITES = [
    Write(b"a", 2, b"1"),
    Write(b"b", 3, b"1"),
    Write(b"a", 4, b"2"),
    Write(b"b", 4, b"2"),
    Write(b"a", 5, None),
]


def strip(e: Event) -> Event:
    return Event(e.type, e.kv, None)


def all_watch(responses: list[Response], prev_kv: bool = True, start: int = 1) -> WatchRecord:
    return WatchRecord(
        name="all",
        key=b"",
        range_end=b"\0",
        prev_kv=prev_kv,
        segments=[Segment(0.0, start)],
        responses=responses,
        covers_all=True,
    )


def good_all() -> WatchRecord:
    return all_watch(
        [
            Response(1, 2, (Event(PUT, A1),)),
            Response(2, 3, (Event(PUT, B1),)),
            Response(3, 4, (E4a, E4b)),
            Response(4, 5, (E5,)),
            Response(5, 5, progress=True),
        ]
    )


def names(violations) -> set[str]:
    return {v.check for v in violations}


def test_correct_watches_pass() -> None:
    key_a = WatchRecord(
        "a",
        b"a",
        b"",
        False,
        [Segment(0, 3)],
        [Response(3, 4, (strip(E4a),)), Response(4, 5, (strip(E5),))],
    )
    assert check_watches([good_all(), key_a], WRITES, log_complete_from=2) == []


def test_reordered_responses_are_not_ordered() -> None:
    w = good_all()
    w.responses[0], w.responses[1] = w.responses[1], w.responses[0]
    assert "ordered" in names(check_watches([w], WRITES, log_complete_from=2))


def test_duplicate_event_is_not_unique() -> None:
    w = good_all()
    w.responses.insert(2, Response(2.5, 3, (Event(PUT, B1),)))
    assert "unique" in names(check_watches([w], WRITES, log_complete_from=2))


def test_split_revision_is_not_atomic() -> None:
    w = good_all()
    w.responses[2:3] = [Response(3, 4, (E4a,)), Response(3.1, 4, (E4b,))]
    assert "atomic" in names(check_watches([w], WRITES, log_complete_from=2))


def test_gap_is_not_reliable() -> None:
    w = good_all()
    del w.responses[1]  # revision 3 never delivered, though rev 4 was
    found = check_watches([w], WRITES, log_complete_from=2)
    assert "reliable" in names(found), found


def test_gap_seen_by_comparison_with_another_watch() -> None:
    other = WatchRecord("b", b"b", b"", False, [Segment(0, 2)], [Response(4, 4, (strip(E4b),))])
    # b's watch vouched for revision 4 but missed b@3 which the all-watch saw.
    assert "reliable" in names(check_watches([good_all(), other], WRITES, log_complete_from=2))


def test_resume_that_skips_events_is_not_resumable() -> None:
    w = good_all()
    w.segments.append(Segment(3.5, 5))  # resumed after rev 3 at 5: lost rev 4
    w.responses = w.responses[:2] + [replace(r, segment=1) for r in w.responses[3:]]
    assert "reliable" in names(check_watches([w], WRITES, log_complete_from=2))


def test_acknowledged_write_without_event() -> None:
    w = good_all()
    writes = WRITES + [Write(b"c", 5, b"9")]
    assert "reliable" in names(check_watches([w], writes, log_complete_from=2))


def test_event_disagreeing_with_the_write() -> None:
    writes = [*WRITES[:-1], Write(b"a", 5, b"not-a-delete")]
    assert "agree" in names(check_watches([good_all()], writes, log_complete_from=2))


def test_progress_notification_ahead_of_events() -> None:
    w = good_all()
    w.responses.insert(2, Response(2.5, 4, progress=True))  # claims rev 4 done, then sends it
    assert "progress" in names(check_watches([w], WRITES, log_complete_from=2))


def test_wrong_prev_kv() -> None:
    w = good_all()
    w.responses[3] = Response(4, 5, (Event(DELETE, E5.kv, A1),))  # stale previous value
    assert "prev_kv" in names(check_watches([w], WRITES, log_complete_from=2))
    w.responses[3] = Response(4, 5, (Event(DELETE, E5.kv, None),))
    assert "prev_kv" in names(check_watches([w], WRITES, log_complete_from=2))


def test_wrong_version_in_event() -> None:
    w = good_all()
    w.responses[2] = Response(3, 4, (Event(PUT, replace(A2, version=1), A1), E4b))
    assert "kv" in names(check_watches([w], log_complete_from=2))


def test_event_below_compaction() -> None:
    late = WatchRecord(
        "late", b"a", b"", False, [Segment(10.0, 2)], [Response(11, 5, (strip(E4a),))]
    )
    found = check_watches([good_all(), late], WRITES, [Compaction(5, completed=9.0)])
    assert "compacted" in names(found)
    # a compaction that completed after the watch started does not apply
    assert "compacted" not in names(
        check_watches([good_all(), late], WRITES, [Compaction(5, completed=10.5)])
    )


def test_missing_revision_on_covers_all_watch() -> None:
    w = all_watch([Response(1, 2, (E2,)), Response(3, 4, (E4a, E4b))], prev_kv=True)
    assert "reliable" in names(check_watches([w], log_complete_from=2))


# ----------------------------------------------------------------- leases
def lease(renewals=(), observations=(), revoke=None) -> LeaseRecord:
    return LeaseRecord(
        lease_id=0x10,
        ttl_s=5,
        grant_call=0.0,
        grant_ret=0.1,
        keys={b"l": 0.2},
        renewals=list(renewals),
        revoke_call=revoke,
        observations=list(observations),
    )


def test_lease_key_living_within_bounds_passes() -> None:
    rec = lease(
        renewals=[Renewal(2.0, 2.1, 5)],
        observations=[
            Observation(b"l", 6.0, 6.1, True),  # renewed at 2.0: alive until >= 7.0
            Observation(b"l", 7.5, 7.6, True),  # within latest 7.1 + bound 1
            Observation(b"l", 9.0, 9.1, False),
        ],
    )
    assert check_lease(rec, bound_s=1.0) == []


def test_lease_key_disappearing_early_is_reported() -> None:
    rec = lease(renewals=[Renewal(2.0, 2.1, 5)], observations=[Observation(b"l", 6.0, 6.5, False)])
    (v,) = check_lease(rec, bound_s=1.0)
    assert "before the earliest expiry" in v


def test_lease_key_outliving_bound_is_reported() -> None:
    rec = lease(observations=[Observation(b"l", 7.0, 7.1, True)])
    (v,) = check_lease(rec, bound_s=1.0)
    assert "still present" in v


def test_unanswered_keepalive_extends_the_latest_expiry_only() -> None:
    rec = lease(
        renewals=[Renewal(3.0, 4.0, None)],
        observations=[Observation(b"l", 8.5, 8.6, True), Observation(b"l", 6.0, 6.1, False)],
    )
    assert check_lease(rec, bound_s=0.0) == []  # 4.0 + 5 = 9.0 latest; 5.0 earliest


def test_keepalive_not_found_before_expiry_is_reported() -> None:
    rec = lease(renewals=[Renewal(1.0, 1.1, 0)])
    assert check_lease(rec, bound_s=1.0)
    assert check_lease(lease(renewals=[Renewal(1.0, 1.1, 0)], revoke=0.5), bound_s=1.0) == []


def test_leader_change_restarts_the_lease_clock_but_only_by_one_ttl() -> None:
    # Granted at 0 (TTL 5, latest expiry 5.1); a new leader was first seen at 4.0.
    late = lease(observations=[Observation(b"l", 9.5, 9.6, True)])
    assert check_lease(late, bound_s=1.0, promotions=[4.0]) == []  # 4.0 + 5 + 1 >= 9.5
    (v,) = check_lease(late, bound_s=1.0, promotions=[])
    assert "still present" in v
    # A promotion after the observation, or before the grant, does not count.
    assert check_lease(late, bound_s=1.0, promotions=[-3.0, 9.8])
    beyond = lease(observations=[Observation(b"l", 10.5, 10.6, True)])
    assert check_lease(beyond, bound_s=1.0, promotions=[4.0])


def test_key_outliving_an_explicit_revoke_is_reported() -> None:
    rec = lease(revoke=1.0, observations=[Observation(b"l", 3.0, 3.1, True)])
    assert check_lease(rec, bound_s=1.0) == []  # the revoke got no answer: may have failed
    rec.revoke_ok = True
    (v,) = check_lease(rec, bound_s=1.0)
    assert "after the revoke" in v
