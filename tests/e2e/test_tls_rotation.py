"""Certificate rotation without restart on a real kvstore member: the files
are replaced on disk; the next connection's handshake presents the renewed
certificate, a broken renewal keeps the last good one, and etcdctl keeps
working throughout."""

from __future__ import annotations

import shutil
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from kvstore.security import certs
from kvstore.testing.etcd_cluster import etcdctl_available
from kvstore.testing.secure_etcd import SecureKvstore
from kvstore.testing.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not etcdctl_available(), reason="etcdctl not installed"),
]


def _served_serial(member: SecureKvstore) -> int:
    """The serial number of the certificate a new TLS handshake presents."""
    ctx = ssl.create_default_context(cafile=member.ca_file)
    cert, key = member.cert("client")
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    address = ("127.0.0.1", member.client_port)
    with (
        socket.create_connection(address, timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_renewed_certificate_is_served_without_restart(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = certs.make_ca()
    ca.write(pki / "ca.pem", pki / "ca-key.pem")
    first = certs.issue(ca, "kv1", ["127.0.0.1", "localhost"])
    first.write(pki / "kv1.pem", pki / "kv1-key.pem")
    certs.issue(ca, "client", server=False).write(pki / "client.pem", pki / "client-key.pem")
    with SecureKvstore(pki, base_dir=tmp_path / "srv", client_cert="client") as member:
        assert member.etcdctl("put", "k", "v1").returncode == 0
        old = _served_serial(member)
        assert old == first.cert.serial_number
        pid = member.proc.pid if member.proc else None

        renewed = certs.issue(ca, "kv1", ["127.0.0.1", "localhost"])
        staging = tmp_path / "staging"
        staging.mkdir()
        renewed.write(staging / "kv1.pem", staging / "kv1-key.pem")
        shutil.copy(staging / "kv1-key.pem", pki / "kv1-key.pem")
        shutil.copy(staging / "kv1.pem", pki / "kv1.pem")
        wait_until(lambda: _served_serial(member) == renewed.cert.serial_number, timeout=10,
                   what="renewed certificate served")  # fmt: skip
        assert member.etcdctl("put", "k", "v2").returncode == 0
        assert member.proc is not None and member.proc.pid == pid  # no restart

        # A broken renewal (certificate and key do not match): the last good
        # certificate keeps serving and the operator's log says why.
        other = certs.issue(ca, "kv1", ["127.0.0.1"])
        other.write(staging / "bad.pem", staging / "bad-key.pem")
        shutil.copy(staging / "bad-key.pem", pki / "kv1-key.pem")
        r = member.etcdctl("get", "k", "--print-value-only")
        assert (r.returncode, r.stdout) == (0, "v2\n"), r.stderr
        assert _served_serial(member) == renewed.cert.serial_number
        wait_until(lambda: b"TLS reload failed" in member.log_path.read_bytes(), timeout=10)


def test_auto_tls_serves_a_self_signed_certificate(tmp_path: Path) -> None:
    member = SecureKvstore(None, auto_tls=True, base_dir=tmp_path / "srv")
    member._spawn()  # start() probes without --insecure-transport=false
    try:

        def put() -> bool:
            return member.etcdctl("--insecure-transport=false", "put", "k", "v").stdout == "OK\n"

        wait_until(put, timeout=60, what="kvstore --auto-tls serving")
        fixtures = tmp_path / "srv" / "data" / "fixtures" / "client"
        assert (fixtures / "cert.pem").exists() and (fixtures / "key.pem").exists()
        plain = member.etcdctl("--insecure-transport=true", "--dial-timeout=2s", "get", "k")
        assert plain.returncode != 0  # plaintext to the TLS port is refused
    finally:
        member.stop()
