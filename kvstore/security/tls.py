"""TLS credentials for gRPC listeners and channels, re-read from disk on handshake.

Owns: checking --cert-file / --key-file / --trusted-ca-file (and the peer
twins) with one clear line per problem (missing or unreadable file, not PEM,
key not matching the certificate, certificate expired or not yet valid, CA
file without a certificate); gRPC server credentials that re-read the files
whenever they change, checked on every new connection before its handshake
(grpc.dynamic_ssl_server_credentials: a renewed certificate is used for new
connections without a restart, as etcd reloads on handshake; a broken
renewal is logged once and the last good credentials keep serving); client
channel credentials; --auto-tls self-signed certificates; and the Common Name
of a verified client certificate (etcd's AuthInfoFromTLS).
Never: binds sockets or decides which listener uses what (the composition
root does), imports anything from server/ or api/.

etcd rule kept: a trusted CA file implies client certificates are required
(etcd's transport.TLSInfo.ServerConfig sets RequireAndVerifyClientCert when
TrustedCAFile is set or ClientCertAuth is on).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kvstore.security import certs

log = logging.getLogger(__name__)

AUTO_TLS_DAYS = 365  # etcd 3.4's self-signed validity (one year)


class TlsConfigError(Exception):
    """Bad TLS input; str(exc) is one line fit for the operator's log."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """One listener's (or client's) file set; empty strings = not given."""

    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file or self.key_file)

    @property
    def require_client_cert(self) -> bool:
        return self.client_cert_auth or bool(self.trusted_ca_file)


@dataclass(frozen=True, slots=True)
class LoadedTls:
    """Validated PEM bytes of a TlsFiles."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None
    not_after: dt.datetime
    common_name: str


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(f"{what} {path}: no such file") from None
    except PermissionError:
        raise TlsConfigError(f"{what} {path}: permission denied") from None
    except IsADirectoryError:
        raise TlsConfigError(f"{what} {path}: is a directory") from None
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if not data.strip():
        raise TlsConfigError(f"{what} {path}: file is empty")
    return data


def _load_certs(data: bytes, path: str, what: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise TlsConfigError(f"{what} {path}: no PEM certificate found")
    return found


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value.decode() if isinstance(value, bytes) else value


def load_tls(files: TlsFiles, now: dt.datetime | None = None) -> LoadedTls:
    """Read and check `files` (cert + key required, CA optional).

    Raises TlsConfigError with a one-line reason."""
    if not files.cert_file or not files.key_file:
        missing = "--key-file" if files.cert_file else "--cert-file"
        raise TlsConfigError(f"TLS needs both --cert-file and --key-file ({missing} not given)")
    cert_pem = _read(files.cert_file, "certificate")
    key_pem = _read(files.key_file, "key")
    chain = _load_certs(cert_pem, files.cert_file, "certificate")
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsConfigError(f"key {files.key_file}: encrypted keys are not supported") from None
    except ValueError:
        raise TlsConfigError(f"key {files.key_file}: no PEM private key found") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != leaf.public_key().public_bytes(der, pub):
        raise TlsConfigError(f"key {files.key_file} does not match certificate {files.cert_file}")
    now = now or dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        raise TlsConfigError(
            f"certificate {files.cert_file} expired at "
            f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    if leaf.not_valid_before_utc > now:
        raise TlsConfigError(
            f"certificate {files.cert_file} is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    ca_pem = None
    if files.trusted_ca_file:
        ca_pem = _read(files.trusted_ca_file, "trusted CA file")
        _load_certs(ca_pem, files.trusted_ca_file, "trusted CA file")
    return LoadedTls(cert_pem, key_pem, ca_pem, leaf.not_valid_after_utc, _common_name(leaf))


def _stamp(files: TlsFiles) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in (files.cert_file, files.key_file, files.trusted_ca_file):
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        out.append((st.st_mtime_ns, st.st_size, st.st_ino) if st else (0, -1, 0))
    return tuple(out)


class ReloadingServerCredentials:
    """Server credentials that follow the files on disk (see module doc).

    `credentials` goes to `server.add_secure_port`. gRPC calls `_fetch` from
    its own threads before each handshake; it only stats the three files
    unless one changed, so the cost per connection is three stat calls.
    """

    def __init__(
        self,
        files: TlsFiles,
        on_reload: Callable[[LoadedTls], None] | None = None,
        on_error: Callable[[TlsConfigError], None] | None = None,
    ) -> None:
        self.files = files
        self.current = load_tls(files)  # a bad start fails loudly, before serving
        self._stamp = _stamp(files)
        self._lock = threading.Lock()
        self._on_reload = on_reload
        self._on_error = on_error
        self._last_error = ""
        self.reloads = 0
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._config(self.current),
            self._fetch,
            require_client_authentication=files.require_client_cert,
        )

    @staticmethod
    def _config(loaded: LoadedTls) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(loaded.key_pem, loaded.cert_pem)], root_certificates=loaded.ca_pem
        )

    def _fetch(self) -> Any:
        """None = keep the current configuration."""
        with self._lock:
            stamp = _stamp(self.files)
            if stamp == self._stamp:
                return None
            try:
                loaded = load_tls(self.files)
            except TlsConfigError as exc:
                # Files mid-rewrite or a broken renewal: keep serving the last
                # good certificate; say so once per distinct problem.
                if str(exc) != self._last_error:
                    self._last_error = str(exc)
                    log.error("TLS reload failed, keeping the current certificate: %s", exc)
                    if self._on_error is not None:
                        self._on_error(exc)
                return None
            self._stamp = stamp
            self._last_error = ""
            self.current = loaded
            self.reloads += 1
            log.info(
                "TLS certificate reloaded from %s (CN=%s, valid until %s)",
                self.files.cert_file, loaded.common_name, loaded.not_after,
            )  # fmt: skip
            if self._on_reload is not None:
                self._on_reload(loaded)
            return self._config(loaded)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Reloading server credentials for `files` (raises TlsConfigError)."""
    return ReloadingServerCredentials(files).credentials


def channel_credentials(
    ca_file: str = "", cert_file: str = "", key_file: str = ""
) -> grpc.ChannelCredentials:
    """Client credentials: trust `ca_file` (default: the system roots), present
    cert/key when both are given. Raises TlsConfigError."""
    ca = _read(ca_file, "CA file") if ca_file else None
    if ca is not None:
        _load_certs(ca, ca_file, "CA file")
    if bool(cert_file) != bool(key_file):
        raise TlsConfigError("a client certificate needs both --cert and --key")
    if cert_file:
        loaded = load_tls(TlsFiles(cert_file, key_file))
        return grpc.ssl_channel_credentials(ca, loaded.key_pem, loaded.cert_pem)
    return grpc.ssl_channel_credentials(ca)


def peer_common_name(
    auth_context: Mapping[str, Sequence[bytes]],
    metadata: Iterable[tuple[str, str | bytes]] = (),
) -> str | None:
    """CN of the client's verified certificate (context.auth_context()), or None
    without one; None also for requests relayed by the gRPC gateway (etcd
    ignores the gateway's own certificate: metadata `grpcgateway-accept`)."""
    if any(key.lower() == "grpcgateway-accept" for key, _ in metadata):
        return None
    kind = auth_context.get("transport_security_type") or []
    if b"ssl" not in kind:
        return None
    names = auth_context.get("x509_common_name") or []
    if not names:
        return None
    return names[0].decode(errors="replace")


def auto_tls(directory: str | os.PathLike[str], hosts: Iterable[str]) -> TlsFiles:
    """--auto-tls: a self-signed certificate for `hosts` in `directory`
    (cert.pem, key.pem), reused while it is valid, as etcd's SelfCert."""
    d = Path(directory)
    files = TlsFiles(str(d / "cert.pem"), str(d / "key.pem"))
    if Path(files.cert_file).exists() and Path(files.key_file).exists():
        try:
            load_tls(files)
            return files
        except TlsConfigError as exc:
            log.warning("regenerating the auto-TLS certificate: %s", exc)
    d.mkdir(parents=True, exist_ok=True)
    hosts = list(hosts) or ["127.0.0.1", "localhost"]
    issued = certs.issue(None, "kvstore", hosts, days=AUTO_TLS_DAYS)
    issued.write(files.cert_file, files.key_file)
    return files
