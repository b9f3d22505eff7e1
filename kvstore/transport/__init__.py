"""Peer transport: Raft messages between members over gRPC (port 2380).

Owns: `GrpcTransport` (outbound streams + inbound servicer) and the codec between
`kvstore.raft.types` and `kvstore.pb.raftpb_pb2`.
Never: touches the Raft core, storage or the clock beyond reconnect back-off.
"""

from kvstore.transport.peer import (
    CLUSTER_ID_MISMATCH,
    MEMBER_REMOVED,
    SERVER_OPTIONS,
    GrpcTransport,
    PeerStats,
    peer_address,
)

__all__ = [
    "CLUSTER_ID_MISMATCH",
    "MEMBER_REMOVED",
    "SERVER_OPTIONS",
    "GrpcTransport",
    "PeerStats",
    "peer_address",
]
