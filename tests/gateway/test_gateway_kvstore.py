"""kvstore's gateway beyond the etcd 3.4 differential: lock and election
over HTTP, the streamed methods (snapshot, keepalive), auth over HTTP with
the Authorization header, metrics counting gateway calls like gRPC ones, and the
experimental shared client port.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from gateway_harness import GatewayNode, http, start_kvstore

from kvstore.testing.waiting import free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def post(node: GatewayNode, path: str, body: object) -> tuple[int, dict]:
    status, raw = node.post(path, body)
    return status, json.loads(raw)


def test_lock_and_election_over_http(kvstore_gw: GatewayNode) -> None:
    _, grant = post(kvstore_gw, "/v3/lease/grant", {"TTL": "30"})
    lease = grant["ID"]
    status, locked = post(kvstore_gw, "/v3/lock/lock", {"name": b64("L"), "lease": lease})
    assert status == 200
    owner = base64.b64decode(locked["key"]).decode()
    assert owner == f"L/{int(lease):x}"
    status, _ = post(kvstore_gw, "/v3/lock/unlock", {"key": locked["key"]})
    assert status == 200

    status, err = post(kvstore_gw, "/v3/election/leader", {"name": b64("E")})
    assert (status, err["code"], err["message"]) == (500, 2, "election: no leader")
    status, won = post(kvstore_gw, "/v3/election/campaign",
                       {"name": b64("E"), "lease": lease, "value": b64("me")})  # fmt: skip
    assert status == 200
    status, leader = post(kvstore_gw, "/v3/election/leader", {"name": b64("E")})
    assert status == 200 and base64.b64decode(leader["kv"]["value"]) == b"me"
    status, _ = post(kvstore_gw, "/v3/election/resign", {"leader": won["leader"]})
    assert status == 200
    post(kvstore_gw, "/v3/lease/revoke", {"ID": lease})


def test_streamed_methods_answer_result_lines(kvstore_gw: GatewayNode) -> None:
    _, grant = post(kvstore_gw, "/v3/lease/grant", {"TTL": "30"})
    status, raw = kvstore_gw.post("/v3/lease/keepalive", {"ID": grant["ID"]})
    lines = raw.decode().splitlines()
    assert status == 200 and len(lines) == 1
    result = json.loads(lines[0])["result"]
    assert result["ID"] == grant["ID"] and int(result["TTL"]) == 30
    status, raw = kvstore_gw.post("/v3/maintenance/snapshot", {})
    chunks = [json.loads(line)["result"] for line in raw.decode().splitlines()]
    assert status == 200 and chunks and all("blob" in c for c in chunks)
    assert "remaining_bytes" not in chunks[-1]  # 0 on the last chunk: omitted


def test_auth_over_http_with_the_authorization_header() -> None:
    """The Auth API over HTTP, and a token in the Authorization header, as
    etcd's gateway takes it (its own node: enabling auth would change the
    other tests' node)."""
    node = start_kvstore()
    try:
        assert post(node, "/v3/auth/user/add", {"name": "root", "password": "rpw"})[0] == 200
        assert post(node, "/v3/auth/user/grant", {"user": "root", "role": "root"})[0] == 200
        assert post(node, "/v3/auth/enable", {})[0] == 200

        status, err = post(node, "/v3/kv/put", {"key": b64("k"), "value": b64("v")})
        assert (status, err["code"], err["message"]) == (400, 3, "etcdserver: user name is empty")
        status, err = post(node, "/v3/auth/authenticate", {"name": "root", "password": "bad"})
        assert (err["code"], err["message"]) == (
            3, "etcdserver: authentication failed, invalid user ID or password")
        status, auth = post(node, "/v3/auth/authenticate", {"name": "root", "password": "rpw"})
        assert status == 200 and auth["token"]

        def with_token(path: str, body: object, token: str) -> tuple[int, dict]:
            req = urllib.request.Request(node.base + path, data=json.dumps(body).encode(),
                                         method="POST", headers={"Authorization": token})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        token = auth["token"]
        assert with_token("/v3/kv/put", {"key": b64("k"), "value": b64("v")}, token)[0] == 200
        status, got = with_token("/v3/kv/range", {"key": b64("k")}, token)
        assert status == 200 and base64.b64decode(got["kvs"][0]["value"]) == b"v"
        status, err = with_token("/v3/kv/range", {"key": b64("k")}, token + "x")
        assert (err["code"], err["message"]) == (16, "etcdserver: invalid auth token")
        assert with_token("/v3/auth/disable", {}, token)[0] == 200
        assert post(node, "/v3/kv/range", {"key": b64("k")})[0] == 200
    finally:
        node.cluster.stop()


def test_gateway_calls_are_counted_like_grpc_calls(kvstore_gw: GatewayNode) -> None:
    def started() -> float:
        _, raw = http("GET", kvstore_gw.metrics_base + "/metrics", None, 5)
        for line in raw.decode().splitlines():
            if line.startswith("grpc_server_started_total") and 'grpc_method="Range"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = started()
    for _ in range(3):
        assert kvstore_gw.post("/v3/kv/range", {"key": b64("x")})[0] == 200
    assert started() == before + 3


def test_cors_preflight(kvstore_gw: GatewayNode) -> None:
    status, _ = http("OPTIONS", kvstore_gw.base + "/v3/kv/range", None, 5)
    assert status == 200


def test_experimental_shared_client_port(tmp_path: object) -> None:
    client, peer = free_port(), free_port()
    env = {**os.environ, "KVSTORE_EXPERIMENTAL_SHARED_CLIENT_PORT": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvstore.cli.server_cmd", "--data-dir", f"{tmp_path}/d",
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "shared port" in proc.stdout.readline()
        node = GatewayNode("kvstore", f"http://127.0.0.1:{client}", "", None)
        wait_until(lambda: node.get("/health")[0] == 200, timeout=30, what="shared port health")
        assert node.post("/v3/kv/put", {"key": b64("s"), "value": b64("http")})[0] == 200
        from kvstore.client import Client

        with Client([f"127.0.0.1:{client}"]) as grpc_client:
            assert grpc_client.get("s").kvs[0].value == b"http"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_watch_ends_when_its_http_client_goes_away(kvstore_gw: GatewayNode) -> None:
    """aiohttp's handler cancellation reaches the watch stream: no leak."""
    import socket

    def gauge(name: str) -> float:
        _, raw = http("GET", kvstore_gw.metrics_base + "/metrics", None, 5)
        for line in raw.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not exported")

    streams = "etcd_debugging_mvcc_watch_stream_total"
    before = gauge(streams)
    host, port = kvstore_gw.base.removeprefix("http://").split(":")
    body = json.dumps({"create_request": {"key": b64("gone")}}).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        received = b""
        while b'"created":true' not in received:  # headers and the first line
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        wait_until(lambda: gauge(streams) == before + 1, timeout=10, what="stream open")
    wait_until(lambda: gauge(streams) == before, timeout=10, what="stream closed")


def test_a_method_the_servicer_lacks_answers_unimplemented(kvstore_gw: GatewayNode) -> None:
    """etcd 3.5's /maintenance/downgrade: the generated base servicer sets
    UNIMPLEMENTED and raises; the gateway answers that status, as grpc does."""
    status, err = post(kvstore_gw, "/v3/maintenance/downgrade", {})
    assert (status, err["code"], err["message"]) == (501, 12, "Method not implemented!")
