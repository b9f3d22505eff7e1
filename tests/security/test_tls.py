"""TLS building blocks: credential checks with one-line errors, mutual TLS over
real gRPC on 127.0.0.1, refusal of a foreign CA, rotation on handshake,
--auto-tls, and the client certificate's Common Name."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from kvstore.security import certs
from kvstore.security.tls import (
    ReloadingServerCredentials,
    TlsConfigError,
    TlsFiles,
    auto_tls,
    channel_credentials,
    load_tls,
    peer_common_name,
)
from kvstore.testing.waiting import wait_until

HOSTS = ["127.0.0.1", "localhost"]


class Pki:
    def __init__(self, d: Path) -> None:
        self.d = d
        self.ca = certs.make_ca("test CA")
        self.ca.write(d / "ca.pem", d / "ca-key.pem")
        self.server = certs.issue(self.ca, "server-1", HOSTS)
        self.server.write(d / "server.pem", d / "server-key.pem")
        certs.issue(self.ca, "alice", client=True, server=False).write(
            d / "alice.pem", d / "alice-key.pem"
        )
        other = certs.make_ca("other CA")
        other.write(d / "other-ca.pem", d / "other-ca-key.pem")
        certs.issue(other, "mallory", server=False).write(d / "mallory.pem", d / "mallory-key.pem")

    def p(self, name: str) -> str:
        return str(self.d / name)

    def server_files(self, client_cert_auth: bool = True) -> TlsFiles:
        return TlsFiles(
            self.p("server.pem"), self.p("server-key.pem"), self.p("ca.pem"), client_cert_auth
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


# ------------------------------------------------------------------ checks


def test_good_files_load(pki: Pki) -> None:
    loaded = load_tls(pki.server_files())
    assert loaded.common_name == "server-1" and loaded.ca_pem is not None


def _one_line(exc: pytest.ExceptionInfo[TlsConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_each_bad_input_has_a_clear_one_line_error(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_bytes(b"")
    (tmp_path / "junk.pem").write_bytes(b"hello")
    expired = certs.issue(
        pki.ca, "old", HOSTS, days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    )
    expired.write(tmp_path / "expired.pem", tmp_path / "expired-key.pem")
    future = certs.issue(
        pki.ca, "new", HOSTS, not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    )
    future.write(tmp_path / "future.pem", tmp_path / "future-key.pem")
    p = pki.p
    cases = {
        "no such file": TlsFiles(p("nope.pem"), p("server-key.pem")),
        "file is empty": TlsFiles(str(tmp_path / "empty.pem"), p("server-key.pem")),
        "no PEM certificate": TlsFiles(str(tmp_path / "junk.pem"), p("server-key.pem")),
        "no PEM private key": TlsFiles(p("server.pem"), str(tmp_path / "junk.pem")),
        "does not match certificate": TlsFiles(p("server.pem"), p("alice-key.pem")),
        "expired at": TlsFiles(str(tmp_path / "expired.pem"), str(tmp_path / "expired-key.pem")),
        "not valid before": TlsFiles(
            str(tmp_path / "future.pem"), str(tmp_path / "future-key.pem")
        ),
        "trusted CA file": TlsFiles(
            p("server.pem"), p("server-key.pem"), str(tmp_path / "junk.pem")
        ),
        "--key-file not given": TlsFiles(p("server.pem"), ""),
        "is a directory": TlsFiles(str(tmp_path), p("server-key.pem")),
    }
    for needle, files in cases.items():
        with pytest.raises(TlsConfigError) as exc:
            load_tls(files)
        assert needle in _one_line(exc), (needle, str(exc.value))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(pki: Pki) -> None:
    os.chmod(pki.p("server-key.pem"), 0)
    with pytest.raises(TlsConfigError, match="permission denied"):
        load_tls(pki.server_files())


def test_trusted_ca_implies_client_certificates_as_etcd(pki: Pki) -> None:
    assert TlsFiles("c", "k", "ca").require_client_cert
    assert TlsFiles("c", "k", "", client_cert_auth=True).require_client_cert
    assert not TlsFiles("c", "k").require_client_cert


# ------------------------------------------------------------------ live gRPC


def _who(request: bytes, context: grpc.ServicerContext) -> bytes:
    cn = peer_common_name(context.auth_context(), context.invocation_metadata())
    return (cn or "-").encode()


@pytest.fixture
def served(pki: Pki) -> Iterator[tuple[int, ReloadingServerCredentials]]:
    creds = ReloadingServerCredentials(pki.server_files())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(_who)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", creds.credentials)
    server.start()
    yield port, creds
    server.stop(None)


def _call(port: int, pki: Pki, cert: str | None, ca: str = "ca.pem", md=()) -> str:
    creds = channel_credentials(
        pki.p(ca), pki.p(f"{cert}.pem") if cert else "", pki.p(f"{cert}-key.pem") if cert else ""
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        return ch.unary_unary("/test.Echo/Who")(b"", timeout=10, metadata=md).decode()


def test_mutual_tls_gives_the_client_common_name(served, pki: Pki) -> None:
    port, _ = served
    assert _call(port, pki, "alice") == "alice"
    # relayed by the HTTP gateway: the certificate is the gateway's, not a user
    assert _call(port, pki, "alice", md=(("grpcgateway-accept", "x"),)) == "-"


def test_foreign_ca_and_missing_client_cert_are_refused(served, pki: Pki) -> None:
    port, _ = served
    for cert in ("mallory", None):
        with pytest.raises(grpc.RpcError) as exc:
            _call(port, pki, cert)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError):  # client does not trust the server's CA
        _call(port, pki, "alice", ca="other-ca.pem")


def _served_cn(port: int, pki: Pki) -> str:
    """The CN of the certificate the server presents to a new connection."""
    ctx = ssl.create_default_context(cafile=pki.p("ca.pem"))
    ctx.load_cert_chain(pki.p("alice.pem"), pki.p("alice-key.pem"))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value


def test_rotation_is_picked_up_by_new_connections(served, pki: Pki) -> None:
    port, creds = served
    creds_ch = channel_credentials(pki.p("ca.pem"), pki.p("alice.pem"), pki.p("alice-key.pem"))
    with grpc.secure_channel(f"127.0.0.1:{port}", creds_ch) as old:
        assert old.unary_unary("/test.Echo/Who")(b"", timeout=10) == b"alice"
        assert _served_cn(port, pki) == "server-1"
        certs.issue(pki.ca, "server-2", HOSTS).write(pki.p("server.pem"), pki.p("server-key.pem"))
        wait_until(lambda: _served_cn(port, pki) == "server-2", timeout=10, what="renewed cert")
        assert creds.reloads == 1
        # the connection made before the renewal keeps working
        assert old.unary_unary("/test.Echo/Who")(b"", timeout=10) == b"alice"
    assert _call(port, pki, "alice") == "alice"


def test_broken_renewal_keeps_the_last_good_certificate(served, pki: Pki) -> None:
    port, creds = served
    Path(pki.p("server-key.pem")).write_bytes(certs.issue(None, "x").key_pem)  # mismatching key
    assert _served_cn(port, pki) == "server-1"
    assert _call(port, pki, "alice") == "alice"
    assert creds.reloads == 0
    certs.issue(pki.ca, "server-3", HOSTS).write(pki.p("server.pem"), pki.p("server-key.pem"))
    wait_until(lambda: _served_cn(port, pki) == "server-3", timeout=10, what="fixed renewal")


def test_start_with_bad_files_fails_before_serving(pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match="no such file"):
        ReloadingServerCredentials(TlsFiles(pki.p("missing.pem"), pki.p("server-key.pem")))


def test_plaintext_server_has_no_common_name() -> None:
    assert peer_common_name({}) is None
    assert peer_common_name({"transport_security_type": [b"insecure"]}) is None
    ctx = {"transport_security_type": [b"ssl"], "x509_common_name": [b"bob"]}
    assert peer_common_name(ctx) == "bob"


# ------------------------------------------------------------------ auto-tls


def test_auto_tls_makes_a_self_signed_cert_and_reuses_it(tmp_path: Path) -> None:
    files = auto_tls(tmp_path / "fixtures" / "client", ["127.0.0.1", "node1.example"])
    loaded = load_tls(files)
    cert = x509.load_pem_x509_certificate(loaded.cert_pem)
    assert cert.issuer == cert.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "node1.example" in sans.get_values_for_type(x509.DNSName)
    assert oct(Path(files.key_file).stat().st_mode & 0o777) == "0o600"
    again = auto_tls(tmp_path / "fixtures" / "client", ["127.0.0.1"])
    assert load_tls(again).cert_pem == loaded.cert_pem
    # a client trusting that certificate can talk to a server using it
    creds = ReloadingServerCredentials(files)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(_who)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", creds.credentials)
    server.start()
    try:
        with grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(files.cert_file)) as ch:
            assert ch.unary_unary("/test.Echo/Who")(b"", timeout=10) == b"-"  # no client cert
    finally:
        server.stop(None)


def test_channel_credentials_errors(pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match="both --cert and --key"):
        channel_credentials(pki.p("ca.pem"), pki.p("alice.pem"), "")
    with pytest.raises(TlsConfigError, match="no such file"):
        channel_credentials(pki.p("nope.pem"))
