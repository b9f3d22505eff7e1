"""Which TLS each listener and the peer channel pool use, from the flags.

Owns: turning NodeConfig's etcd TLS flags into credentials, once, for the
composition root: the client listener's reloading server credentials
(--cert-file/--key-file/--trusted-ca-file/--client-cert-auth, or
--auto-tls: a self-signed certificate under <data-dir>/fixtures/client),
the peer listener's (--peer-cert-file/--peer-key-file/--peer-trusted-ca-file/
--peer-client-cert-auth), and the PeerChannels pool's channel credentials
(the peer CA, and the member certificate as client certificate, so peers
verify each other), and the credentials a follower forwards to the leader's
https client URL with. A URL's scheme says whether a listener is TLS.
Never: binds a listener (runtime.bind / the `kvstore` command do) or reads
the files again after start except through ReloadingServerCredentials (a
renewed certificate is used for new connections, as etcd reloads on
handshake).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from kvstore.security.tls import (
    ReloadingServerCredentials,
    TlsConfigError,
    TlsFiles,
    auto_tls,
    channel_credentials,
    load_tls,
)
from kvstore.server.config import NodeConfig, host_port
from kvstore.server.errors import StartupError


def _https(urls: tuple[str, ...]) -> bool:
    return any(u.startswith("https://") for u in urls)


def _hosts(urls: tuple[str, ...]) -> list[str]:
    return sorted({host_port(u)[0] for u in urls} | {"127.0.0.1", "localhost"})


def client_tls_files(cfg: NodeConfig) -> TlsFiles:
    """The client listener's files (made under <data-dir>/fixtures/client
    for --auto-tls); raises TlsConfigError."""
    files = TlsFiles(cfg.cert_file, cfg.key_file, cfg.trusted_ca_file, cfg.client_cert_auth)
    if files.enabled:
        return files
    if not cfg.auto_tls:
        raise TlsConfigError("https client URL without --cert-file/--key-file (or --auto-tls)")
    return auto_tls(Path(cfg.data_dir) / "fixtures" / "client", _hosts(cfg.advertise_client_urls))


def client_credentials(cfg: NodeConfig) -> ReloadingServerCredentials | None:
    """The client listener's credentials; None for plaintext. Raises
    StartupError with the one-line TLS problem."""
    if not _https(cfg.listen_client_urls):
        return None
    try:
        return ReloadingServerCredentials(client_tls_files(cfg))
    except TlsConfigError as exc:
        raise StartupError(f"client TLS: {exc}") from None


def metrics_ssl_context(
    cfg: NodeConfig, http_urls: tuple[str, ...] | list[str] = ()
) -> ssl.SSLContext | None:
    """An https --listen-metrics-urls (or --listen-client-http-urls, the JSON
    gateway: `http_urls`) serves with the client listener's certificate and
    client-certificate rule, as etcd does (read at start; not reloaded). None
    when every such URL is http://."""
    if not _https((*cfg.listen_metrics_urls, *http_urls)):
        return None
    try:
        files = client_tls_files(cfg)
        load_tls(files)  # the one-line checks (missing file, key mismatch, expiry)
    except TlsConfigError as exc:
        raise StartupError(f"metrics TLS: {exc}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    if files.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if files.trusted_ca_file:
            ctx.load_verify_locations(files.trusted_ca_file)
    return ctx


def _peer_files(cfg: NodeConfig) -> TlsFiles:
    return TlsFiles(
        cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_trusted_ca_file, cfg.peer_client_cert_auth
    )


def peer_server_credentials(cfg: NodeConfig) -> ReloadingServerCredentials | None:
    """The peer listener's credentials (None: plaintext)."""
    if not _https(cfg.listen_peer_urls):
        return None
    files = _peer_files(cfg)
    try:
        if not files.enabled:
            raise TlsConfigError("https peer URL without --peer-cert-file/--peer-key-file")
        return ReloadingServerCredentials(files)
    except TlsConfigError as exc:
        raise StartupError(f"peer TLS: {exc}") from None


def peer_channel_credentials(cfg: NodeConfig) -> grpc.ChannelCredentials | None:
    """What this member presents and trusts when it dials its peers (None:
    plaintext, when its own advertised peer URLs are http://)."""
    if not _https(cfg.initial_advertise_peer_urls) and not _https(cfg.listen_peer_urls):
        return None
    files = _peer_files(cfg)
    try:
        if not files.enabled:
            raise TlsConfigError("https peer URL without --peer-cert-file/--peer-key-file")
        return channel_credentials(files.trusted_ca_file, files.cert_file, files.key_file)
    except TlsConfigError as exc:
        raise StartupError(f"peer TLS: {exc}") from None


def forward_channel_credentials(cfg: NodeConfig) -> grpc.ChannelCredentials | None:
    """What a follower presents and trusts when it forwards a call (lease
    keep-alive, membership change) to the leader's https client URL: this
    member's client-listener certificate as client certificate, the client
    CA (None: the client URLs are http://, the peer pool is used as before)."""
    if not _https(cfg.advertise_client_urls) or not cfg.cert_file:
        return None
    try:
        return channel_credentials(cfg.trusted_ca_file, cfg.cert_file, cfg.key_file)
    except TlsConfigError as exc:
        raise StartupError(f"client TLS: {exc}") from None
