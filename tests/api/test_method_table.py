"""MethodTable: the one generic handler that serves every client-facing method."""

from __future__ import annotations

import grpc

from kvstore.api.method_table import MethodTable
from kvstore.pb import rpc_pb2_grpc


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _OneMethod(grpc.GenericRpcHandler):
    """A generic handler as older generated code registers it (no table)."""

    def __init__(self, method: str, handler: object) -> None:
        self._method, self._handler = method, handler

    def service(self, details: grpc.HandlerCallDetails) -> object:
        return self._handler if details.method == self._method else None


def test_generated_add_function_fills_the_table() -> None:
    table = MethodTable()
    rpc_pb2_grpc.add_KVServicer_to_server(rpc_pb2_grpc.KVServicer(), table)
    for name in ("Range", "Put", "DeleteRange", "Txn", "Compact"):
        handler = table.service(_Details(f"/etcdserverpb.KV/{name}"))
        assert handler is not None and handler.unary_unary is not None


def test_unknown_method_is_none_so_grpc_answers_unimplemented() -> None:
    table = MethodTable()
    rpc_pb2_grpc.add_KVServicer_to_server(rpc_pb2_grpc.KVServicer(), table)
    assert table.service(_Details("/etcdserverpb.KV/Nope")) is None
    assert table.service(_Details("/other.Service/Range")) is None


def test_generic_only_registration_is_asked_on_a_miss() -> None:
    table = MethodTable()
    marker = object()
    table.add_generic_rpc_handlers((_OneMethod("/old.Service/Call", marker),))
    assert table.service(_Details("/old.Service/Call")) is marker


def test_install_registers_one_generic_handler() -> None:
    added: list[tuple[grpc.GenericRpcHandler, ...]] = []

    class _Server:
        def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
            added.append(handlers)

    table = MethodTable()
    table.install(_Server())
    assert added == [(table,)]
