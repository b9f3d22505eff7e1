"""Strict reconfiguration checks (etcd's mayAddMember / mayRemoveMember /
mayPromoteMember) as pure functions of a member table and a Raft status."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kvstore import errors
from kvstore.server import strict_reconfig as sr


@dataclass
class M:
    id: int
    name: str = "n"
    is_learner: bool = False


@dataclass
class Pr:
    match: int = 10
    heard_recently: bool = True


@dataclass
class St:
    progress: dict[int, Pr] = field(default_factory=dict)


SELF = 1


def healthy3() -> tuple[list[M], St]:
    return [M(1), M(2), M(3)], St({1: Pr(), 2: Pr(), 3: Pr()})


def test_add_to_a_healthy_cluster_is_allowed() -> None:
    members, st = healthy3()
    sr.check_add(members, st, SELF, is_learner=False)
    sr.check_add(members, st, SELF, is_learner=True)


def test_add_while_a_voter_never_started_is_unhealthy() -> None:
    members, st = healthy3()
    members.append(M(4, name=""))  # added, never started: match 0
    st.progress[4] = Pr(match=0, heard_recently=True)
    with pytest.raises(errors.EtcdError) as e:
        sr.check_add(members, st, SELF, is_learner=False)
    assert e.value == errors.UNHEALTHY_CLUSTER()
    with pytest.raises(errors.EtcdError):  # a learner too: every voter must be connected
        sr.check_add(members, st, SELF, is_learner=True)


def test_add_voter_needs_enough_started_members() -> None:
    members = [M(1), M(2, name=""), M(3, name="")]
    st = St({1: Pr(), 2: Pr(), 3: Pr()})
    with pytest.raises(errors.EtcdError) as e:
        sr.check_add(members, st, SELF, is_learner=False)
    assert e.value == errors.MEMBER_NOT_ENOUGH_STARTED()
    sr.check_add([M(1)], St({1: Pr()}), SELF, is_learner=False)  # 1 -> 2 members: allowed


def test_remove_down_member_or_learner_is_allowed_but_not_a_needed_voter() -> None:
    members, st = healthy3()
    st.progress[3] = Pr(heard_recently=False)
    sr.check_remove(members, st, SELF, 3)  # down: not in the active quorum
    with pytest.raises(errors.EtcdError) as e:
        sr.check_remove(members, st, SELF, 2)  # would leave 1 connected of 2
    assert e.value == errors.UNHEALTHY_CLUSTER()
    sr.check_remove([*members, M(9, is_learner=True)], st, SELF, 9)
    sr.check_remove(*healthy3(), SELF, 2)


def test_promote_counts_the_learner_as_started() -> None:
    sr.check_promote([M(1), M(2), M(3), M(4, is_learner=True)])
    with pytest.raises(errors.EtcdError) as e:
        sr.check_promote([M(1), M(2, name=""), M(3, name=""), M(4, name="", is_learner=True)])
    assert e.value == errors.MEMBER_NOT_ENOUGH_STARTED()
