"""Single-server membership changes applied to a ConfState (Raft thesis §4.1, §4.2.1).

Owns: the pure rule turning (configuration, ConfChange) into the next configuration.
Never: decides when a change takes effect (core.py: when the entry is appended)
or touches progress tracking. The node layer uses `apply_conf_change` too, to
know the configuration as of its applied index when it takes a snapshot.
"""

from __future__ import annotations

from .types import ConfChange, ConfChangeType, ConfState


def apply_conf_change(cs: ConfState, cc: ConfChange) -> ConfState:
    voters = set(cs.voters)
    learners = set(cs.learners)
    n = cc.node_id
    if cc.type == ConfChangeType.ADD_NODE:
        learners.discard(n)  # promoting a learner
        voters.add(n)
    elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
        voters.discard(n)
        learners.add(n)
    elif cc.type == ConfChangeType.REMOVE_NODE:
        voters.discard(n)
        learners.discard(n)
    else:  # UPDATE_NODE: metadata only, membership unchanged
        return cs
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
