"""The member-list RPC on the peer port: `/kvstore.peer.Membership/Members`.

Owns: serving the RPC (etcd serves the same on its peer URLs as GET /members)
and calling it on another member through the peer client layer. The payload
is opaque bytes here (server/join.py encodes and decodes the JSON), so no
generated protobuf module is needed on either side.
Never: interprets the payload; writes anything; retries past the caller's
deadline (the call is idempotent, so PeerClient retries it on UNAVAILABLE).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from kvstore.transport.peer import peer_address
from kvstore.transport.peer_client import PeerClient, UnaryMethod

SERVICE = "kvstore.peer.Membership"
METHOD = f"/{SERVICE}/Members"
NOT_STARTED = "member not started"

MEMBERS: UnaryMethod[bytes, bytes] = UnaryMethod(METHOD, None, idempotent=True)


def add_members_service(server: grpc.aio.Server, answer: Callable[[], bytes | None]) -> None:
    """Serve the Members RPC on the peer server (before it starts). `answer()`
    is the payload, or None while the member is not open yet (UNAVAILABLE)."""

    async def members(_request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        payload = answer()
        if payload is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, NOT_STARTED)
        assert payload is not None  # abort() raised otherwise
        return payload

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Members": grpc.unary_unary_rpc_method_handler(
                members, request_deserializer=None, response_serializer=None
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))


async def fetch_members(client: PeerClient, url: str, timeout_s: float) -> bytes:
    """The payload of the member at peer URL `url` ("http://host:port" or
    "host:port"). Raises transport.peer_client.PeerCallError (and its
    subclasses) or ValueError for a malformed URL."""
    return await client.unary(peer_address(url), MEMBERS, b"", timeout_s=timeout_s)


__all__ = ["MEMBERS", "METHOD", "SERVICE", "add_members_service", "fetch_members"]
