"""The same HTTP requests to real etcd 3.4.23's gateway and to kvstore's.

One scenario (put, range with prefix / limit / revision, txn CAS both
branches, delete with prev_kv, lease grant / put / timetolive / revoke,
compaction and a read of a compacted revision, member list, status, a watch
with a few events then cancel, and each kind of bad input) runs against a
fresh single-member etcd and a fresh single-member kvstore. Status codes and
JSON bodies must be equal after normalising what legitimately differs:
cluster / member / lease ids, raft terms and indexes, db sizes, member names
and URLs, and the text of JSON-syntax errors (Go's encoding/json words
them differently; their status and gRPC code must still match).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from gateway_harness import GatewayNode

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.timeout(120)]

_IDS = {"cluster_id", "member_id", "raft_term"}
_STATUS_VOLATILE = {"dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm",
                    "raftAppliedIndex"}  # fmt: skip


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def norm(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: norm(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [norm(v, key) for v in value]
    if key in _IDS:
        return "<id>"
    return value


def record(label: str, status: int, body: bytes, *, loose_message: bool = False) -> dict:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return {"step": label, "status": status, "text": body.decode("utf-8", "replace")}
    if loose_message and isinstance(parsed, dict) and "error" in parsed:
        # Go's JSON-syntax wording differs; the two fields must still agree.
        assert parsed["error"] == parsed["message"], parsed
        parsed = {**parsed, "error": "<decode error>", "message": "<decode error>"}
    return {"step": label, "status": status, "body": norm(parsed)}


def scenario(node: GatewayNode) -> list[dict]:
    out: list[dict] = []

    def call(label: str, path: str, body: Any, **kw: Any) -> dict:
        status, raw = node.post(path, body)
        out.append(record(label, status, raw, **kw))
        return json.loads(raw) if raw.startswith(b"{") else {}

    call("put foo", "/v3/kv/put", {"key": b64("foo"), "value": b64("bar")})
    for i in range(1, 4):
        call(f"put foo/{i}", "/v3/kv/put", {"key": b64(f"foo/{i}"), "value": b64(f"v{i}"),
                                             "prev_kv": True})  # fmt: skip
    call("range prefix limit 2", "/v3/kv/range",
         {"key": b64("foo/"), "range_end": b64("foo0"), "limit": 2})  # fmt: skip
    call("range count only", "/v3/kv/range",
         {"key": b64("foo/"), "range_end": b64("foo0"), "count_only": True})  # fmt: skip
    call("range at revision 2", "/v3/kv/range",
         {"key": b64("foo"), "range_end": b64("fop"), "revision": "2"})  # fmt: skip
    call("range sorted desc", "/v3/kv/range", {"key": b64("foo/"), "range_end": b64("foo0"),
         "sort_order": "DESCEND", "sort_target": "MOD", "keys_only": True})  # fmt: skip
    cas = {
        "compare": [{"key": b64("foo"), "result": "EQUAL", "target": "VALUE",
                     "value": b64("bar")}],
        "success": [{"request_put": {"key": b64("foo"), "value": b64("baz")}}],
        "failure": [{"request_range": {"key": b64("foo")}}],
    }  # fmt: skip
    call("txn cas succeeds", "/v3/kv/txn", cas)
    call("txn cas fails", "/v3/kv/txn", cas)
    call("delete prev_kv", "/v3/kv/deleterange", {"key": b64("foo/1"), "prev_kv": True})
    call("delete missing", "/v3/kv/deleterange", {"key": b64("nothing")})

    grant = call("lease grant", "/v3/lease/grant", {"TTL": "60"})
    lease = grant.get("ID", "0")
    out[-1]["body"]["ID"] = "<lease>" if grant.get("ID") else None
    call("put with lease", "/v3/kv/put",
         {"key": b64("leased"), "value": b64("x"), "lease": lease})  # fmt: skip
    ttl = call("lease timetolive", "/v3/kv/lease/timetolive", {"ID": lease, "keys": True})
    assert 50 <= int(ttl.get("TTL", 0)) <= 60, ttl
    out[-1]["body"].update(ID="<lease>", TTL="<ttl>")
    status, raw = node.post("/v3/lease/leases", {})
    assert status == 200 and [x["ID"] for x in json.loads(raw)["leases"]] == [lease], raw
    call("lease revoke", "/v3/lease/revoke", {"ID": lease})
    call("range leased key after revoke", "/v3/kv/range", {"key": b64("leased")})
    ttl = call("lease timetolive after revoke", "/v3/lease/timetolive", {"ID": lease})
    out[-1]["body"]["ID"] = "<lease>" if ttl.get("ID") == lease else ttl.get("ID")
    call("lease revoke unknown", "/v3/lease/revoke", {"ID": "12345"})

    rev = int(call("range for revision", "/v3/kv/range", {"key": b64("foo")})["header"]["revision"])
    call("compaction", "/v3/kv/compaction", {"revision": str(rev)})
    call("range compacted revision", "/v3/kv/range", {"key": b64("foo"), "revision": str(rev - 1)})
    call("compaction again", "/v3/kv/compaction", {"revision": str(rev - 1)})
    call("range future revision", "/v3/kv/range", {"key": b64("foo"), "revision": str(rev + 9)})

    members = call("member list", "/v3/cluster/member/list", {})
    assert len(members["members"]) == 1 and members["members"][0]["clientURLs"], members
    out[-1]["body"]["members"] = [{k: "<masked>" for k in m} for m in members["members"]]
    status_body = call("status", "/v3/maintenance/status", {})
    assert status_body["leader"] == status_body["header"]["member_id"], status_body
    for key in _STATUS_VOLATILE:
        if key in out[-1]["body"]:
            out[-1]["body"][key] = "<volatile>"
    call("alarm list", "/v3/maintenance/alarm", {})
    # Auth, disabled with an empty store (kvstore has no Auth service yet).
    call("auth authenticate", "/v3/auth/authenticate", {"name": "root", "password": "x"})
    call("auth enable", "/v3/auth/enable", {})
    call("auth disable", "/v3/auth/disable", {})
    call("auth user list", "/v3/auth/user/list", {})
    call("auth role list", "/v3/auth/role/list", {})
    call("auth user get", "/v3/auth/user/get", {"name": "nobody"})
    call("auth user grant", "/v3/auth/user/grant", {"user": "nobody", "role": "r"})
    call("auth role get", "/v3/auth/role/get", {"role": "none"})
    call("auth role revoke", "/v3/auth/role/revoke", {"role": "none", "key": b64("k")})
    call("auth user add empty", "/v3/auth/user/add", {})
    call("auth role add empty", "/v3/auth/role/add", {})
    call("v3beta prefix", "/v3beta/kv/range", {"key": b64("foo")})

    # Bad input.
    call("malformed json", "/v3/kv/range", b"{bad", loose_message=True)
    call("wrong type", "/v3/kv/range", {"key": 5}, loose_message=True)
    call("wrong int", "/v3/kv/range", {"key": b64("foo"), "limit": "x"}, loose_message=True)
    call("not an object", "/v3/kv/range", b"[]", loose_message=True)
    call("unknown field", "/v3/kv/range", {"key": b64("foo"), "no_such_field": 1})
    call("bad base64", "/v3/kv/range", {"key": "!!!"})
    call("truncated base64", "/v3/kv/range", {"key": "Zm9"})
    call("empty body", "/v3/kv/range", b"")
    call("empty key", "/v3/kv/put", {"key": "", "value": b64("v")})
    call("too large for etcd", "/v3/kv/put",
         {"key": b64("big"), "value": b64(b"x" * 1_600_000)})  # fmt: skip
    call("too large for grpc", "/v3/kv/put",
         {"key": b64("big"), "value": b64(b"x" * 2_200_000)})  # fmt: skip
    call("unknown path", "/v3/kv/nope", {})
    call("v3alpha prefix", "/v3alpha/kv/range", {"key": b64("foo")})
    status, raw = node.get("/v3/kv/range")
    out.append(record("GET on a POST path", status, raw))
    status, raw = node.get("/version")
    out.append(record("version", status, raw))
    status, raw = node.get("/health")
    out.append(record("health", status, raw))
    out.append({"step": "watch", "records": asyncio.run(watch_session(node.base))})
    status, raw = node.post("/v3/watch", {"create_request": {"key": 5}})
    out.append(record("watch bad first request", status, raw, loose_message=True))
    return out


class ChunkedStream:
    """A raw HTTP/1.1 POST whose body (chunked) is written as the test goes
    and whose chunked response is read line by line: a client that, like
    etcd3gw or `curl -T -`, keeps the request open while reading."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending = b""
        self.status = 0

    @classmethod
    async def open(cls, base: str, path: str) -> ChunkedStream:
        url = urlsplit(base)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n".encode()
        )
        return cls(reader, writer)

    async def send(self, obj: Any) -> None:
        data = json.dumps(obj).encode() + b"\n"
        self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self._writer.drain()

    async def end_body(self) -> None:
        """The last chunk. etcd's gateway answers only once the request body
        is complete (observed on 3.4.23); the response stream stays open."""
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()
        head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), 10)
        self.status = int(head.split(b" ", 2)[1])
        assert b"chunked" in head.lower(), head

    async def next_result(self) -> dict:
        while b"\n" not in self._pending:
            size_line = await asyncio.wait_for(self._reader.readuntil(b"\r\n"), 10)
            size = int(size_line.strip(), 16)
            self._pending += await self._reader.readexactly(size)
            await self._reader.readexactly(2)
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)["result"]

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def watch_session(base: str) -> list[Any]:
    """Create a watch, make 3 events, then cancel it by closing the stream
    (etcd's gateway reads the whole request body before it answers, so a
    client cannot send a cancel request after the events); then a second
    stream whose body is a create and its cancel. Returns the normalised
    responses (events flattened: how they are batched may differ)."""
    out: list[Any] = []
    stream = await ChunkedStream.open(base, "/v3/watch")
    try:
        await stream.send({"create_request": {"key": b64("w"), "prev_kv": True}})
        await stream.end_body()
        assert stream.status == 200
        out.append(norm(await stream.next_result()))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for value in ("1", "2"):
                put = {"key": b64("w"), "value": b64(value)}
                async with session.post(base + "/v3/kv/put", json=put) as r:
                    assert r.status == 200
            async with session.post(base + "/v3/kv/deleterange", json={"key": b64("w")}) as r:
                assert r.status == 200
        events: list[Any] = []
        while len(events) < 3:
            result = await stream.next_result()
            assert "events" in result, result
            events.extend(result["events"])
        out.append({"events": events})
    finally:
        await stream.close()
    stream = await ChunkedStream.open(base, "/v3/watch")
    try:
        await stream.send({"create_request": {"key": b64("w2"), "watch_id": "7"}})
        await stream.send({"cancel_request": {"watch_id": "7"}})
        await stream.end_body()
        out.append(norm(await stream.next_result()))
        out.append(norm(await stream.next_result()))
    finally:
        await stream.close()
    return out


def test_gateway_matches_etcd(etcd_gw: GatewayNode, kvstore_gw: GatewayNode) -> None:
    expected = scenario(etcd_gw)
    actual = scenario(kvstore_gw)
    assert [r["step"] for r in actual] == [r["step"] for r in expected]
    diffs = [
        f"{e['step']}:\n  etcd:    {json.dumps(e)}\n  kvstore: {json.dumps(a)}"
        for e, a in zip(expected, actual, strict=True)
        if e != a
    ]
    assert not diffs, "\n".join(diffs)
