"""A TLS mismatch gets a one-line reason in the connection error: TLS client at
a plaintext port, plaintext client at a TLS port, untrusted or expired server
certificate (in-process gRPC servers on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from kvstore.client import Client, ClientTLS
from kvstore.client.errors import ConnectionFailedError
from kvstore.security import certs
from kvstore.security.tls import ReloadingServerCredentials, TlsFiles


def _server(creds: grpc.ServerCredentials | None) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = (
        server.add_secure_port("127.0.0.1:0", creds)
        if creds is not None
        else server.add_insecure_port("127.0.0.1:0")
    )
    server.start()
    return server, port


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca = certs.make_ca("test CA")
    ca.write(tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    certs.issue(ca, "srv", ["127.0.0.1"]).write(tmp_path / "srv.pem", tmp_path / "srv-key.pem")
    old = certs.issue(
        ca, "old", ["127.0.0.1"], days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    )
    old.write(tmp_path / "old.pem", tmp_path / "old-key.pem")
    certs.make_ca("other CA").write(tmp_path / "other.pem", tmp_path / "other-key.pem")
    return tmp_path


@pytest.fixture
def tls_port(pki: Path) -> Iterator[int]:
    creds = ReloadingServerCredentials(TlsFiles(str(pki / "srv.pem"), str(pki / "srv-key.pem")))
    server, port = _server(creds.credentials)
    yield port
    server.stop(None)


def _error(endpoint: str, tls: ClientTLS | None) -> str:
    with Client([endpoint], tls=tls, dial_timeout=0.5, command_timeout=3) as c:  # noqa: SIM117
        with pytest.raises(ConnectionFailedError) as exc:
            c.get("k")
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_tls_client_at_plaintext_port(pki: Path) -> None:
    server, port = _server(None)
    try:
        text = _error(f"127.0.0.1:{port}", ClientTLS(ca_file=str(pki / "ca.pem")))
        assert "does not speak TLS" in text
    finally:
        server.stop(None)


def test_plaintext_client_at_tls_port(tls_port: int) -> None:
    assert "speaks TLS" in _error(f"127.0.0.1:{tls_port}", None)


def test_untrusted_server_certificate(pki: Path, tls_port: int) -> None:
    text = _error(f"127.0.0.1:{tls_port}", ClientTLS(ca_file=str(pki / "other.pem")))
    assert "server certificate rejected" in text


def test_expired_server_certificate(pki: Path) -> None:
    # Serve an expired certificate (a server would refuse to load it: bypass the check).
    creds = grpc.ssl_server_credentials(
        [((pki / "old-key.pem").read_bytes(), (pki / "old.pem").read_bytes())]
    )
    server, port = _server(creds)
    try:
        text = _error(f"127.0.0.1:{port}", ClientTLS(ca_file=str(pki / "ca.pem")))
        assert "server certificate rejected" in text and "expired" in text
    finally:
        server.stop(None)
