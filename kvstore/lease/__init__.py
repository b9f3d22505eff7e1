"""Leases: replicated lease state (Lessor), the leader's expiry clock
(LeaderLeases) and the async facade (LeaseService).

Never imports server/ or api/ (dependencies point one way: server -> lease).
"""

from kvstore.lease.clock import Clock, FakeClock, MonotonicClock
from kvstore.lease.leader import LeaderLeases
from kvstore.lease.lessor import MAX_LEASE_TTL_S, Lease, Lessor
from kvstore.lease.service import LeaseForwarder, LeaseIdGen, LeaseService, min_lease_ttl

__all__ = [
    "MAX_LEASE_TTL_S",
    "Clock",
    "FakeClock",
    "LeaseForwarder",
    "LeaderLeases",
    "Lease",
    "LeaseIdGen",
    "LeaseService",
    "Lessor",
    "MonotonicClock",
    "min_lease_ttl",
]
