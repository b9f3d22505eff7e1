"""LeaseHooks: how the MVCC store asks the lessor about leases (a seam, no import of lease/).

Owns: the protocol and the default "no leases exist" implementation.
Never: imports the lessor. Hooks are called synchronously while an op applies,
after the op has been validated (so a failed op never calls attach/detach).
"""

from __future__ import annotations

from typing import Protocol


class LeaseHooks(Protocol):
    def exists(self, lease_id: int) -> bool:
        """True if `lease_id` is a granted, unrevoked lease."""
        ...

    def attach(self, lease_id: int, key: bytes) -> None:
        """`key` now carries `lease_id`."""
        ...

    def detach(self, lease_id: int, key: bytes) -> None:
        """`key` no longer carries `lease_id` (overwritten with another lease or deleted)."""
        ...


class NoLeases:
    """Default hooks: no lease exists, so a Put with a nonzero lease fails."""

    def exists(self, lease_id: int) -> bool:
        return False

    def attach(self, lease_id: int, key: bytes) -> None:
        return None

    def detach(self, lease_id: int, key: bytes) -> None:
        return None
