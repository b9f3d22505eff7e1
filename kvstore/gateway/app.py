"""The HTTP/JSON gateway: etcd's grpc-gateway paths on aiohttp.

Owns: `Gateway`, which turns an HTTP request into a call of the SAME
servicer method the gRPC server runs (built by `api.add_servicers`, so
validation, size limits, error messages and RPC metrics are shared) and the
result into etcd's JSON; and `make_app`, the aiohttp application that serves
the gateway and/or the probes.

Why aiohttp: it runs on the node's asyncio loop (no thread, no second loop:
the servicers and the facade are loop-owned), is the best-kept asyncio
HTTP/1.1 server, streams responses (watch, keepalive, snapshot) with
chunked encoding, and cancels a handler when its client goes away
(`handler_cancellation`), which ends a watch whose curl was interrupted.

Request shapes, as etcd 3.4's gateway (observed on 3.4.23):
- unary: POST body = one JSON request (empty = the empty request);
  200 + the response, or the error JSON with the gateway's HTTP status.
- server streaming (snapshot, election observe): POST one request; 200 and
  one `{"result": …}` line per response; an error mid-stream is a
  `{"error": {…}}` line.
- bidi (watch, lease keepalive): the body is a sequence of JSON requests,
  read as they arrive; the first one undecodable -> 500 code 2 (Unknown);
  a later one ends the request side (the stream stays open, as etcd).
Never: lets an exception escape to aiohttp (it would answer 500 with a
traceback-like page); never buffers more than `max_body_bytes` of a body.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import grpc
from aiohttp import web
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from kvstore.api.options import DEFAULT_MAX_REQUEST_BYTES
from kvstore.gateway import codec
from kvstore.gateway.context import GatewayAbort, GatewayContext
from kvstore.gateway.probes import Probes
from kvstore.gateway.routes import PREFIXES, ROUTES

log = logging.getLogger(__name__)

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd: gRPC receive limit = max-request-bytes + 512 KiB
INTERNAL_MESSAGE = "kvstore: internal error"

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}
_JSON_HEADERS = {**_CORS, "Content-Type": "application/json",
                 "Grpc-Metadata-Content-Type": "application/grpc"}  # fmt: skip
_ERROR_HEADERS = {**_CORS, "Content-Type": "application/json"}
_TEXT_HEADERS = {**_CORS, "Content-Type": "text/plain; charset=utf-8",
                 "X-Content-Type-Options": "nosniff"}  # fmt: skip


class _Details(NamedTuple):
    """The grpc.HandlerCallDetails a MethodTable looks a method up by."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class _Collector:
    """Stands in for the grpc server while `add_servicers` registers: keeps
    the one generic handler (the MethodTable) it installs."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.handlers.extend(handlers)


class _Method(NamedTuple):
    # A grpc.RpcMethodHandler (typed Any: grpc's stubs type its behaviours as
    # optional sync callables); None: not served here (UNIMPLEMENTED).
    handler: Any
    request_class: type[Message]


class Gateway:
    """JSON over HTTP for the servicers of one node's KvServer facade `kv`."""

    def __init__(self, kv: Any, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        from kvstore.api import add_servicers

        collector = _Collector()
        add_servicers(collector, kv, max_request_bytes=max_request_bytes)  # type: ignore[arg-type]
        self.grpc_limit = max_request_bytes + GRPC_OVERHEAD_BYTES
        # The JSON of a message is at most ~4/3 (base64) + keys larger; past
        # this the message cannot fit the gRPC limit whatever it holds.
        self.max_body_bytes = 4 * self.grpc_limit
        self._methods: dict[str, _Method] = {}
        self._auth: Any = None
        self._streams: set[asyncio.Task[Any]] = set()
        pool = descriptor_pool.Default()
        for path, full in ROUTES.items():
            service, name = full.strip("/").split("/")
            handler = None
            for generic in collector.handlers:
                handler = generic.service(_Details(full))  # type: ignore[arg-type]
                if handler is not None:
                    break
            if handler is None and service == "etcdserverpb.Auth":
                handler = self._auth_disabled(kv, name)
            desc = pool.FindMethodByName(f"{service}.{name}")
            self._methods[path] = _Method(handler, message_factory.GetMessageClass(desc.input_type))

    def _auth_disabled(self, kv: Any, name: str) -> Any:
        """No Auth service on this node: answer as etcd with auth disabled."""
        from kvstore.gateway.auth_disabled import AuthDisabledServicer

        if self._auth is None:
            self._auth = AuthDisabledServicer(kv)
        return grpc.unary_unary_rpc_method_handler(getattr(self._auth, name))

    def close_streams(self) -> None:
        """End every streamed response now (watch, keepalive, observe never
        end on their own: waiting for them would only delay shutdown)."""
        for task in list(self._streams):
            task.cancel()

    def route(self, path: str) -> _Method | None:
        for prefix in PREFIXES:
            if path.startswith(prefix):
                return self._methods.get(path[len(prefix) :])
        return None

    async def handle(self, request: web.Request, method: _Method) -> web.StreamResponse:
        ctx = GatewayContext(request.headers, _peer(request))
        handler = method.handler
        try:
            if handler is None:
                # What kvstore's gRPC server answers for a method it does not serve.
                raise GatewayAbort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            if handler.request_streaming:
                return await self._bidi(request, method, ctx)
            body = await self._read_body(request)
            message = codec.decode_body(body, method.request_class())
            self._check_size(message)
            if handler.response_streaming:
                return await self._server_stream(request, handler, message, ctx)
            response = await handler.unary_unary(message, ctx)
            return web.Response(body=codec.dumps(codec.encode(response)), headers=_JSON_HEADERS)
        except GatewayAbort as exc:
            return _error(exc.code, exc.details)
        except codec.DecodeError as exc:
            return _error(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:  # noqa: BLE001 - logged, never leaked to the client
            code = ctx.code()
            if code is not None and code != grpc.StatusCode.OK:
                # A status set before raising (the generated base servicer's
                # "Method not implemented!"): grpc answers with it, so do we.
                log.debug("gateway: %s: %s", request.path, ctx.details(), exc_info=True)
                return _error(code, ctx.details())
            log.exception("gateway: %s failed", request.path)
            return _error(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    # ------------------------------------------------------------ internals
    async def _read_body(self, request: web.Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise GatewayAbort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large(size))
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_size(self, message: Message) -> None:
        size = message.ByteSize()
        if size > self.grpc_limit:
            raise GatewayAbort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_large(size))

    def _too_large(self, size: int) -> str:
        # grpc-go's receive-limit message, which etcd's gateway passes on.
        return f"grpc: received message larger than max ({size} vs. {self.grpc_limit})"

    async def _server_stream(
        self,
        request: web.Request,
        handler: Any,
        message: Message,
        ctx: GatewayContext,
    ) -> web.StreamResponse:
        return await _stream_out(request, handler.unary_stream(message, ctx), self._streams)

    async def _bidi(
        self, request: web.Request, method: _Method, ctx: GatewayContext
    ) -> web.StreamResponse:
        assert method.handler is not None
        reader = _JsonSequence(request, self.max_body_bytes)
        try:
            first = await reader.next_value()
        except codec.DecodeError as exc:
            return _error(grpc.StatusCode.UNKNOWN, str(exc), status=500)
        try:
            first_message = (
                None if first is _EOF else codec.decode_value(first, method.request_class())
            )
        except codec.DecodeError as exc:
            return _error(grpc.StatusCode.UNKNOWN, str(exc), status=500)

        async def requests() -> AsyncIterator[Message]:
            if first_message is None:
                return
            yield first_message
            while True:
                try:
                    value = await reader.next_value()
                    if value is _EOF:
                        return
                    msg = codec.decode_value(value, method.request_class())
                    self._check_size(msg)
                except (codec.DecodeError, GatewayAbort) as exc:
                    # etcd's gateway: a bad later request half-closes the stream.
                    log.debug("gateway: %s request stream ended: %s", request.path, exc)
                    return
                yield msg

        responses = method.handler.stream_stream(requests(), ctx)
        return await _stream_out(request, responses, self._streams)


class _Eof:
    pass


_EOF = _Eof()


class _JsonSequence:
    """Consecutive JSON values from a streamed request body (Go's
    json.Decoder: whitespace-separated or back to back), read as they come."""

    def __init__(self, request: web.Request, max_pending: int) -> None:
        self._content = request.content
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._buf = ""
        self._decoder = json.JSONDecoder()
        self._max_pending = max_pending
        self._eof = False

    async def next_value(self) -> Any:
        while True:
            text = self._buf.lstrip()
            if text:
                try:
                    value, end = self._decoder.raw_decode(text)
                except json.JSONDecodeError as exc:
                    # Incomplete so far, or wrong: only EOF tells them apart
                    # (a bare prefix of a valid value fails the same way).
                    if self._eof or len(text) > self._max_pending:
                        raise codec.DecodeError(exc.msg) from None
                else:
                    self._buf = text[end:]
                    return value
            elif self._eof:
                return _EOF
            chunk = await self._content.readany()
            if not chunk:
                self._eof = True
                try:
                    self._buf += self._utf8.decode(b"", final=True)
                except UnicodeDecodeError:
                    raise codec.DecodeError("invalid UTF-8 in request") from None
                continue
            try:
                self._buf = text + self._utf8.decode(chunk)
            except UnicodeDecodeError:
                raise codec.DecodeError("invalid UTF-8 in request") from None


async def _stream_out(
    request: web.Request, responses: AsyncIterator[Any], streams: set[asyncio.Task[Any]]
) -> web.StreamResponse:
    """One `{"result": …}` line per response; an error ends it with an
    `{"error": {…}}` line (grpc-gateway v1 ForwardResponseStream). The
    handler's task is in `streams` meanwhile (see Gateway.close_streams)."""
    task = asyncio.current_task()
    if task is not None:
        streams.add(task)
        task.add_done_callback(streams.discard)
    resp = web.StreamResponse(status=200, headers=_JSON_HEADERS)
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    try:
        async for item in responses:
            await resp.write(codec.dumps({"result": codec.encode(item)}) + b"\n")
    except GatewayAbort as exc:
        await resp.write(codec.stream_error_body(exc.code, exc.details) + b"\n")
    except (ConnectionError, RuntimeError) as exc:
        log.debug("gateway: %s client went away: %s", request.path, exc)
        return resp
    except Exception:  # noqa: BLE001 - logged, never leaked
        log.exception("gateway: stream %s failed", request.path)
        await resp.write(
            codec.stream_error_body(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE) + b"\n"
        )
    finally:
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            await aclose()
    await resp.write_eof()
    return resp


def _error(code: grpc.StatusCode, message: str, status: int | None = None) -> web.Response:
    return web.Response(
        status=status or codec.http_status(code),
        body=codec.error_body(code, message),
        headers=_ERROR_HEADERS,
    )


def _text(status: int, text: str, extra: dict[str, str] | None = None) -> web.Response:
    headers = {**_TEXT_HEADERS, **(extra or {})}
    return web.Response(status=status, body=text.encode(), headers=headers)


def _peer(request: web.Request) -> str:
    remote = request.remote or ""
    return f"ipv4:{remote}" if remote else ""


def make_app(
    gateway_factory: Callable[[], Gateway | None] | None,
    probes: Probes,
) -> web.Application:
    """The aiohttp application: the gateway (when `gateway_factory` gives one;
    called lazily so the app can exist before the node has started) and the
    probes. Every path is dispatched here, so unknown paths get etcd's 404
    body and wrong methods its 405, not aiohttp's pages."""
    state: dict[str, Gateway | None] = {}

    def gateway() -> Gateway | None:
        if "gw" not in state and gateway_factory is not None:
            state["gw"] = gateway_factory()
        return state.get("gw")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        path = request.path
        if probes.handles(path):
            if request.method not in ("GET", "HEAD"):
                return _text(405, "Method Not Allowed\n", {"Allow": "GET"})
            status, ctype, body = await probes.respond(path, _query(request))
            headers = {**_CORS, "Content-Type": ctype}
            return web.Response(status=status, body=body, headers=headers)
        gw = gateway() if path.startswith(PREFIXES) else None
        method = gw.route(path) if gw is not None else None
        if method is None or gw is None:
            # grpc-gateway's own 404 under its prefixes; Go's ServeMux elsewhere.
            return _text(404, "Not Found\n" if gw is not None else "404 page not found\n")
        if request.method == "OPTIONS":
            return web.Response(status=200, headers=_CORS)
        if request.method != "POST":
            return _text(405, "Method Not Allowed\n")
        return await gw.handle(request, method)

    # client_max_size is a backstop: bodies are read with our own bound.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def _query(request: web.Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in request.query.items():
        out.setdefault(key, []).append(value)
    return out
