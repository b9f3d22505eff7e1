"""Gateway JSON codec and routing, in process (no server).

The byte-level conventions etcd's gateway uses (observed on 3.4.23) and the
bad-input rules: strict base64 like Go, unknown fields ignored, non-object
bodies refused, error bodies and HTTP statuses per gRPC code.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from kvstore.gateway import codec
from kvstore.gateway.context import GatewayAbort, GatewayContext
from kvstore.gateway.routes import ROUTES
from kvstore.pb import rpc_pb2


def test_response_uses_proto_names_int64_strings_and_base64() -> None:
    resp = rpc_pb2.RangeResponse(count=1, more=False)
    resp.header.cluster_id = 2**63 + 5
    resp.header.revision = 7
    resp.kvs.add(key=b"foo", value=b"\x00\xff", create_revision=7, mod_revision=7, version=1)
    body = codec.dumps(codec.encode(resp))
    assert body == (
        b'{"header":{"cluster_id":"9223372036854775813","revision":"7"},'
        b'"kvs":[{"key":"Zm9v","create_revision":"7","mod_revision":"7","version":"1",'
        b'"value":"AP8="}],"count":"1"}'
    )


def test_request_accepts_proto_and_json_names_and_ignores_unknown_fields() -> None:
    body = b'{"key":"Zm9v","range_end":"Zm9w","sortOrder":"DESCEND","nope":{"x":1}}'
    req = codec.decode_body(body, rpc_pb2.RangeRequest())
    assert (req.key, req.range_end, req.sort_order) == (b"foo", b"fop", 2)


@pytest.mark.parametrize("body", [b"", b"  \n", b"null"])
def test_empty_body_is_the_empty_request(body: bytes) -> None:
    assert codec.decode_body(body, rpc_pb2.RangeRequest()) == rpc_pb2.RangeRequest()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"key":"!!!"}', "illegal base64 data at input byte 0"),
        (b'{"key":"Zm9"}', "illegal base64 data at input byte 0"),
        (b'{"key":"Zm9v-_=="}', "illegal base64 data at input byte 4"),
        (b'{"compare":[{"key":"Zm9v","value":"*"}]}', "illegal base64 data at input byte 0"),
        (b'{"success":[{"request_put":{"key":"a b="}}]}', "illegal base64 data at input byte 1"),
    ],
)
def test_bytes_are_strict_standard_base64(body: bytes, message: str) -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode_body(body, rpc_pb2.TxnRequest() if b"compare" in body or b"success"
                          in body else rpc_pb2.RangeRequest())  # fmt: skip
    assert str(info.value) == message


@pytest.mark.parametrize(
    "body",
    [
        b"{bad",
        b"[]",
        b'"x"',
        b"5",
        b'{"key":5}',
        b'{"limit":"x"}',
        b'{"sort_order":"UP"}',
        b'{"key":"Zm9v"} trailing',
        b"\xff\xfe",
    ],  # fmt: skip
)
def test_bad_bodies_are_decode_errors_never_other_exceptions(body: bytes) -> None:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode_body(body, rpc_pb2.RangeRequest())
    assert str(info.value) and "Traceback" not in str(info.value)


def test_error_bodies_and_statuses() -> None:
    body = json.loads(codec.error_body(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: x"))
    assert body == {"error": "etcdserver: x", "message": "etcdserver: x", "code": 11}
    # grpc-gateway v1 statuses observed on etcd 3.4.23.
    assert codec.http_status(grpc.StatusCode.FAILED_PRECONDITION) == 412
    assert codec.http_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429
    assert codec.http_status(grpc.StatusCode.UNKNOWN) == 500
    assert codec.http_status(grpc.StatusCode.NOT_FOUND) == 404
    assert codec.http_status(grpc.StatusCode.UNAVAILABLE) == 503
    no_leader = codec.stream_error_body(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
    stream = json.loads(no_leader)
    assert stream == {"error": {"grpc_code": 14, "http_code": 503,
                                "message": "etcdserver: no leader",
                                "http_status": "Service Unavailable"}}  # fmt: skip


def test_context_abort_raises_an_abort_error_with_the_status() -> None:
    ctx = GatewayContext({"Authorization": "tok", "Grpc-Metadata-Hasleader": "true", "X": "y"})
    assert ctx.invocation_metadata() == (("authorization", "tok"), ("hasleader", "true"))
    with pytest.raises(grpc.aio.AbortError) as info:
        asyncio.run(ctx.abort(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"))
    assert isinstance(info.value, GatewayAbort)
    assert ctx.code() == grpc.StatusCode.NOT_FOUND


def test_every_route_names_a_real_method() -> None:
    from google.protobuf import descriptor_pool

    import kvstore.pb.v3election_pb2
    import kvstore.pb.v3lock_pb2  # noqa: F401 - registers the descriptors

    pool = descriptor_pool.Default()
    for path, full in ROUTES.items():
        service, name = full.strip("/").split("/")
        assert pool.FindMethodByName(f"{service}.{name}"), path


class _Content:
    """request.content stand-in: hands out the given chunks, then b""."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


class _Request:
    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _Content(chunks)


def _values(chunks: list[bytes]) -> list[object]:
    from kvstore.gateway.app import _EOF, _JsonSequence

    async def run() -> list[object]:
        seq = _JsonSequence(_Request(chunks), 1 << 20)  # type: ignore[arg-type]
        out: list[object] = []
        while (value := await seq.next_value()) is not _EOF:
            out.append(value)
        return out

    return asyncio.run(run())


def test_request_stream_values_split_anywhere_across_chunks() -> None:
    body = '{"create_request":{"key":"é"}}\n{"cancel_request":{}} {"x":[1,2]}'.encode()
    expected = [{"create_request": {"key": "é"}}, {"cancel_request": {}}, {"x": [1, 2]}]
    for cut in range(1, len(body)):  # including inside the two-byte "é"
        assert _values([body[:cut], body[cut:]]) == expected, cut
    assert _values([body]) == expected
    assert _values([]) == []


def test_request_stream_garbage_is_a_decode_error_at_its_end() -> None:
    with pytest.raises(codec.DecodeError):
        _values([b'{"a":1} garbage'])
    with pytest.raises(codec.DecodeError):
        _values([b'{"a":', b"\xff}"])
