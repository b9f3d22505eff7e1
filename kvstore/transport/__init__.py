"""Peer transport: ALL member-to-member networking of a node.

Owns:
  peer_client.py   PeerChannels (every channel to another member; the one place
                   peer credentials are chosen) and PeerClient (unary calls:
                   deadline, retry of idempotent calls, error mapping)
  peer.py          GrpcTransport: Raft message streams (outbound + inbound servicer)
  codec.py         kvstore.raft.types <-> kvstore.pb.raftpb_pb2
  forward.py       LeaderResolver + LeaderForwarder: leader-only calls made by a
                   follower (lease keepalive / time-to-live, membership changes)
  snapshot_send.py / snapshot_recv.py   Raft snapshot streaming (leader / follower)
  members_rpc.py   the member-list RPC a joining member asks
Never: touches the Raft core or the database (snapshot files are spooled and
streamed, never applied here); reads the clock beyond reconnect back-off and
call deadlines.
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
