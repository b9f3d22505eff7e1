"""Lease lifetime checks: no attached key outlives its lease by more than a
bound, and none disappears before its lease can have expired.

Owns: the earliest and latest instants at which a lease may legally expire,
derived from the client's own record of grant / keepalive / revoke calls.
Never: talks to a server or reads a clock.

A lease granted or renewed with TTL T by a request invoked at `call` and
answered at `ret` was stamped by the leader somewhere in [call, ret], so:
    earliest expiry = max(grant call, successful renewal calls) + T
    latest expiry   = max(grant ret, every renewal attempt's ret) + T
                      (an attempt with no answer counts at its give-up time)
A leader change restarts a lease's clock on the new leader at its last
checkpointed remaining TTL, or the full TTL when none was recorded (etcd
always uses the full TTL), so the latest expiry also moves to
    (last promotion observed before the read) + T
Promotions are the times a harness first saw each new leader (a late sighting
only loosens the bound). On top of the latest expiry comes `bound_s`, what
the server documents: the expiry pass period, the revoke's Raft round trip,
the checkpoint interval and election time (kvstore/lease/leader.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Renewal:
    call: float
    ret: float  # give-up time when no answer came
    ttl: int | None  # TTL answered (0 = lease not found); None = no answer


@dataclass
class Observation:
    """A linearizable read of `key` in [call, ret] saw it `present` (or not)."""

    key: bytes
    call: float
    ret: float
    present: bool


@dataclass
class LeaseRecord:
    lease_id: int
    ttl_s: int
    grant_call: float
    grant_ret: float
    keys: dict[bytes, float] = field(default_factory=dict)  # key -> attach put returned
    renewals: list[Renewal] = field(default_factory=list)
    revoke_call: float | None = None  # a revoke was sent (answered or not)
    revoke_ok: bool = False  # ... and answered: the lease is gone
    observations: list[Observation] = field(default_factory=list)

    def earliest_expiry(self) -> float:
        stamped = [self.grant_call] + [r.call for r in self.renewals if r.ttl]
        return max(stamped) + self.ttl_s

    def latest_expiry(self) -> float:
        return max([self.grant_ret] + [r.ret for r in self.renewals]) + self.ttl_s


def check_lease(rec: LeaseRecord, bound_s: float, promotions: Sequence[float] = ()) -> list[str]:
    out: list[str] = []
    early = rec.earliest_expiry()
    base_late = rec.latest_expiry()
    revoked = rec.revoke_call if rec.revoke_call is not None else float("inf")
    for r in rec.renewals:
        if r.ttl == 0 and r.ret < early and r.ret < revoked:
            out.append(
                f"lease {rec.lease_id:x}: keepalive answered 'not found' at {r.ret:.3f}, "
                f"before the earliest expiry {early:.3f}"
            )
    for ob in rec.observations:
        attached = rec.keys.get(ob.key)
        if attached is None or ob.call < attached:
            continue  # the attach put had not completed; nothing to expect
        if not ob.present and ob.ret < early and ob.ret < revoked:
            out.append(
                f"lease {rec.lease_id:x}: key {ob.key!r} gone at {ob.ret:.3f}, before the earliest "
                f"expiry {early:.3f} (TTL {rec.ttl_s}s)"
            )
        if not ob.present:
            continue
        restarted = [p + rec.ttl_s for p in promotions if rec.grant_call <= p <= ob.call]
        late = max([base_late, *restarted])
        if rec.revoke_ok and revoked < late:
            late, why = revoked, "revoke"
        else:
            why = "latest expiry"
        if ob.call > late + bound_s:
            out.append(
                f"lease {rec.lease_id:x}: key {ob.key!r} still present at {ob.call:.3f}, after the "
                f"{why} {late:.3f} + bound {bound_s}s"
            )
    return out


def check_leases(
    records: list[LeaseRecord], bound_s: float, promotions: Sequence[float] = ()
) -> list[str]:
    return [v for rec in records for v in check_lease(rec, bound_s, promotions)]
