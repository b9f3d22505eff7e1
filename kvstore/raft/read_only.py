"""Batched ReadIndex rounds on the leader (Raft thesis §6.4).

Owns: read requests waiting for a leadership check, grouped into rounds. Every
request that arrives between two flushes joins one round; one heartbeat
broadcast (carrying the round number as context) confirms the whole round.
Never: sends messages; core.py broadcasts and delivers the released requests.
Invariants: rounds are numbered increasingly and started in order; an ack of
round r from a voter also confirms every earlier round (that heartbeat was sent
after they started), so a voter's ack is just the highest round it echoed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .quorum import majority


@dataclass(slots=True)
class ReadRequest:
    ctx: bytes
    sender: int  # the node that asked (the leader itself for local reads)


@dataclass(slots=True)
class _Round:
    number: int
    index: int
    requests: list[ReadRequest]


def encode_round(number: int) -> bytes:
    return number.to_bytes(8, "big")


def decode_round(ctx: bytes) -> int:
    return int.from_bytes(ctx, "big") if len(ctx) == 8 else 0


class ReadOnly:
    __slots__ = ("_waiting", "_rounds", "_next_round", "_acked")

    def __init__(self) -> None:
        self._waiting: list[ReadRequest] = []  # not yet in a round
        self._rounds: list[_Round] = []
        self._next_round = 1
        self._acked: dict[int, int] = {}  # voter -> highest round acknowledged

    def add(self, req: ReadRequest) -> None:
        self._waiting.append(req)

    def has_waiting(self) -> bool:
        return bool(self._waiting)

    def start_round(self, commit_index: int) -> bytes:
        """Move all waiting requests into a new round reading at `commit_index`."""
        number = self._next_round
        self._next_round += 1
        self._rounds.append(_Round(number, commit_index, self._waiting))
        self._waiting = []
        return encode_round(number)

    def last_round_ctx(self) -> bytes:
        return encode_round(self._rounds[-1].number) if self._rounds else b""

    def ack(self, voter: int, ctx: bytes, self_id: int, voters: Iterable[int]) -> list[_Round]:
        """Record `voter` echoing round `ctx`; return the rounds now confirmed, oldest first."""
        number = decode_round(ctx)
        if number == 0 or not self._rounds:
            return []
        if number > self._acked.get(voter, 0):
            self._acked[voter] = number
        voters = tuple(voters)
        acks = sorted(
            (self._next_round if v == self_id else self._acked.get(v, 0) for v in voters),
            reverse=True,
        )
        if not acks:
            return []
        confirmed = acks[majority(len(acks)) - 1]
        done = 0
        while done < len(self._rounds) and self._rounds[done].number <= confirmed:
            done += 1
        released = self._rounds[:done]
        del self._rounds[:done]
        return released

    def pending_count(self) -> int:
        return len(self._waiting) + sum(len(r.requests) for r in self._rounds)
