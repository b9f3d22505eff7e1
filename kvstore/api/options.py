"""gRPC server options and request limits for the client-facing API.

Owns: the numbers a client can observe at the transport and validation
layers — etcd's `--max-request-bytes` (1.5 MiB), the gRPC receive limit on
top of it (+512 KiB, like etcd), `--max-txn-ops` (128) and the keepalive
policy that etcdctl/Go clients need (ETCD_API.md §0.3, §0.4, §1.6).
Never: opens sockets or builds servers (the `kvstore` command does).

Invariant: the gRPC receive limit is always strictly larger than the
request limit, so an oversized-but-receivable request reaches validation
and gets etcd's `InvalidArgument "etcdserver: request is too large"`, and
only a grossly oversized one is refused by gRPC with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_REQUEST_BYTES = 1_572_864  # etcd --max-request-bytes default (1.5 MiB)
GRPC_RECV_HEADROOM_BYTES = 512 * 1024  # etcd: grpc MaxRecvMsgSize = max-request-bytes + 512 KiB
MAX_TXN_OPS = 128  # etcd --max-txn-ops default

# etcd's --grpc-keepalive-min-time 5s: Go clients ping every >= 10 s (etcdctl
# asks for 2 s, grpc-go clamps); gRPC-core's default (300 s, 2 strikes) answers
# those pings with GOAWAY ENHANCE_YOUR_CALM and breaks idle Watch streams.
KEEPALIVE_MIN_TIME_MS = 5_000
# etcd's --grpc-keepalive-interval 2h / --grpc-keepalive-timeout 20s: the
# server's own pings, which reap half-open connections of vanished clients.
KEEPALIVE_TIME_MS = 2 * 60 * 60 * 1000
KEEPALIVE_TIMEOUT_MS = 20_000


def grpc_server_options(
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> list[tuple[str, Any]]:
    """Options for `grpc.aio.server(options=...)` serving the etcd API.

    `max_request_bytes` is the node's --max-request-bytes; the receive limit
    is that plus 512 KiB, sending is unlimited (etcd: math.MaxInt32)."""
    if max_request_bytes <= 0:
        raise ValueError(f"max_request_bytes must be positive, got {max_request_bytes}")
    return [
        ("grpc.max_receive_message_length", max_request_bytes + GRPC_RECV_HEADROOM_BYTES),
        ("grpc.max_send_message_length", -1),
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_MIN_TIME_MS),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # grpcio enables SO_REUSEPORT by default: a second server could then
        # bind a client port already in use instead of failing loudly.
        ("grpc.so_reuseport", 0),
    ]


GRPC_SERVER_OPTIONS: list[tuple[str, Any]] = grpc_server_options()
