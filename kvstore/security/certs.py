"""Certificate generation with `cryptography`: a CA, certificates it signs, and
self-signed certificates (--auto-tls).

Owns: key and X.509 generation and PEM writing for scripts/make_certs.py, the
tests, and `tls.auto_tls`. Never: loads or validates credentials for serving
(tls.py does), touches the network.

Choices: ECDSA P-256 keys (fast handshakes, accepted by every gRPC/Go/OpenSSL
client); server and client usages both set on member certificates (a member
is a server for clients and peers and a client of its peers, as etcd's docs
recommend); SANs carry every IP and DNS name the member is reached by.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key (PEM bytes)."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write both files; the key readable by its owner only."""
        Path(cert_path).write_bytes(self.cert_pem)
        key = Path(key_path)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def key(self) -> PrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _validity(days: float, not_before: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    return start, start + dt.timedelta(days=days)


def make_ca(common_name: str = "kvstore CA", days: float = 3650) -> Issued:
    """A self-signed CA certificate (may sign end-entity certificates only)."""
    key = new_key()
    start, end = _validity(days, None)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: Issued | None,
    common_name: str,
    hosts: Iterable[str] = (),
    days: float = 825,
    server: bool = True,
    client: bool = True,
    not_before: dt.datetime | None = None,
    key: PrivateKey | None = None,
) -> Issued:
    """An end-entity certificate for `common_name` with `hosts` as SANs, signed
    by `ca` (None: self-signed). `not_before` and `days` let tests make
    expired or not-yet-valid certificates; `key` reuses a key (renewal)."""
    key = key or new_key()
    start, end = _validity(days, not_before)
    subject = _name(common_name)
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject if ca is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )  # fmt: skip
    sans = _sans(hosts)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = ca.key if ca is not None else key
    cert = builder.sign(signer, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
