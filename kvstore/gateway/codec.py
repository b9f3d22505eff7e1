"""JSON <-> protobuf for the gateway, and the gateway's error bodies.

Owns: decoding a request body into a request message (protobuf's own
`json_format`, never a hand-written mapping), encoding a response the way
etcd's grpc-gateway (JSONPb{OrigName: true}) writes it — proto field names,
64-bit integers as strings, bytes as standard base64, enums by name, fields
at their default value left out, compact separators — and the error shapes:
unary `{"error","message","code"}` with the HTTP status grpc-gateway v1
gives each gRPC code, stream `{"error":{"grpc_code","http_code","message",
"http_status"}}`.
Never: raises anything but `DecodeError` on bad input; never echoes a Python
traceback or exception type to the client.

Decoding follows etcd 3.4's gateway: unknown fields are ignored (its jsonpb
unmarshaler allows them), an empty body or `null` is the empty request, a
body that is not a JSON object is InvalidArgument.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_COMPACT = (",", ":")

# grpc-gateway v1 runtime.HTTPStatusFromCode (etcd 3.4 vendors v1.9):
# observed on 3.4.23: FailedPrecondition 412, ResourceExhausted 429, Unknown 500.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class DecodeError(Exception):
    """A request body the gateway cannot turn into the request message."""


def grpc_code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def decode_value(value: Any, message: Message) -> Message:
    """Fill `message` from one decoded JSON value (a dict, or None = empty)."""
    if value is None:
        return message
    if not isinstance(value, dict):
        raise DecodeError(f"cannot unmarshal {_json_kind(value)} into a request object")
    value = _known_fields(value, message.DESCRIPTOR)
    try:
        json_format.ParseDict(value, message)
    except json_format.ParseError as exc:
        raise DecodeError(_short(str(exc))) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(_short(str(exc)) or "invalid request") from None
    return message


def decode_body(body: bytes, message: Message) -> Message:
    """Fill `message` from a whole request body."""
    if not body.strip():
        return message
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(_short(str(exc)) or "invalid JSON") from None
    return decode_value(value, message)


def encode(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=_COMPACT).encode()


def error_body(code: grpc.StatusCode, message: str) -> bytes:
    """A unary error, key order as etcd 3.4's gateway writes it."""
    return dumps({"error": message, "message": message, "code": grpc_code_number(code)})


def stream_error_body(code: grpc.StatusCode, message: str) -> bytes:
    """An error inside a streamed (200) response: grpc-gateway v1's shape."""
    status = http_status(code)
    return dumps(
        {
            "error": {
                "grpc_code": grpc_code_number(code),
                "http_code": status,
                "message": message,
                "http_status": HTTPStatus(status).phrase,
            }
        }
    )


_BYTES = FieldDescriptor.TYPE_BYTES
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _known_fields(value: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    """`value` without the keys the message does not have, at every level
    (etcd 3.4's jsonpb ignores unknown fields; json_format's own
    ignore_unknown_fields would also let an unknown *enum value* through,
    which etcd refuses), with every bytes field checked first: Go decodes
    []byte with strict standard base64 (padding required, no URL-safe
    alphabet) where protobuf's Python parser would read "!!!" as b""."""
    fields = descriptor.fields_by_name
    by_json = descriptor.fields_by_camelcase_name
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = fields.get(key) or by_json.get(key)
        if field is None:
            continue
        out[key] = item
        if item is None:
            continue
        items = item if isinstance(item, list) else [item]
        if field.type == _BYTES:
            for text in items:
                if isinstance(text, str):
                    _check_base64(text)
        elif field.type == _MESSAGE:
            subs = [
                _known_fields(sub, field.message_type) if isinstance(sub, dict) else sub
                for sub in items
            ]
            out[key] = subs if isinstance(item, list) else subs[0]
    return out


def _check_base64(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    body = data.rstrip(b"=")
    pad = len(data) - len(body)
    for i, byte in enumerate(body):
        if byte not in _B64_ALPHABET:
            raise DecodeError(f"illegal base64 data at input byte {i}")
    if pad > 2 or len(data) % 4 != 0 or (pad and len(body) % 4 < 2):
        # Go reports where the incomplete quantum starts.
        raise DecodeError(f"illegal base64 data at input byte {len(body) - len(body) % 4}")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "number"


def _short(text: str) -> str:
    """First line only, bounded: parser messages can quote the whole input."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:200]
