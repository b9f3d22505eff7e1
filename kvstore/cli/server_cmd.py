"""`kvstore`: run one cluster member, with etcd's flag names.

Owns: flag/env parsing (every flag also reads KVSTORE_<FLAG>), turning every
startup problem into ONE line on stderr and a non-zero exit (never a
traceback), the client gRPC server around the api servicers, the optional
metrics/health HTTP listener, the ready line, and graceful shutdown on
SIGTERM/SIGINT (stop accepting, let in-flight RPCs finish within a grace
period, stop the node, exit 0). A member removed from the cluster
(`KvNode.removed`) shuts down the same way after REMOVED_STOP_DELAY_S and
exits 0 with etcd's line "the member has been permanently removed from the
cluster", as etcd 3.4 does.
Never: implements request handling (api/ and server/ do).

With no flags: a single-node cluster named "default" in ./default.kvstore,
clients on 127.0.0.1:2379, peers on 127.0.0.1:2380 — like etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from kvstore import logsetup, tracing
from kvstore.server.config import (
    DEFAULT_CLIENT_URL,
    DEFAULT_PEER_URL,
    DEFAULT_TOKEN,
    ConfigError,
    NodeConfig,
    split_urls,
)
from kvstore.server.errors import DataDirError, StartupError
from kvstore.transport.peer import MEMBER_REMOVED

if TYPE_CHECKING:
    from kvstore.server.runtime import KvNode

log = logging.getLogger("kvstore")

SHUTDOWN_GRACE_S = 5.0
# etcd's stopWithDelay after applying its own removal: a removed leader keeps
# running this long so the remaining members learn the commit of the removal
# from it (and the MemberRemove caller gets its answer) before it goes.
REMOVED_STOP_DELAY_S = 1.0
EXIT_BAD_CONFIG = 2
EXIT_STARTUP = 1


def _opt(flag: str, **kw: Any):  # noqa: ANN202 - click decorator factory
    env = "KVSTORE_" + flag.lstrip("-").replace("-", "_").upper()
    return click.option(flag, envvar=env, show_envvar=True, **kw)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_opt("--name", default="default", show_default=True, help="Human-readable member name.")
@_opt("--data-dir", default="", help="Data directory [default: ${name}.kvstore].")
@_opt("--listen-client-urls", default=DEFAULT_CLIENT_URL, show_default=True)
@_opt("--advertise-client-urls", default="", help="[default: the listen client URLs]")
@_opt("--listen-peer-urls", default=DEFAULT_PEER_URL, show_default=True)
@_opt("--initial-advertise-peer-urls", default=DEFAULT_PEER_URL, show_default=True)
@_opt("--initial-cluster", default="", help="name=peerURL,... [default: this member only]")
@_opt(
    "--initial-cluster-state",
    default="new",
    show_default=True,
    help="'new' to bootstrap, 'existing' to join a running cluster.",
)
@_opt("--initial-cluster-token", default=DEFAULT_TOKEN, show_default=True)
@_opt("--heartbeat-interval", type=int, default=100, show_default=True, help="Milliseconds.")
@_opt("--election-timeout", type=int, default=1000, show_default=True, help="Milliseconds.")
@_opt("--snapshot-count", type=int, default=100_000, show_default=True)
@_opt("--max-request-bytes", type=int, default=1_572_864, show_default=True)
@_opt("--listen-metrics-urls", default="", help="HTTP /metrics, /health, /version.")
@_opt(
    "--listen-client-http-urls",
    default="",
    help="HTTP/1.1 JSON gateway (/v3/...) and probes, as etcd 3.5's flag.",
)
@_opt("--quota-backend-bytes", type=int, default=0, show_default=True, help="0: 2 GiB.")
@_opt("--auto-compaction-mode", default="periodic", show_default=True)
@_opt("--auto-compaction-retention", default="0", show_default=True, help="'0': off.")
@_opt(
    "--experimental-watch-progress-notify-interval",
    default="10m",
    show_default=True,
    help="Period of watch progress notifications (Go duration: 10m, 200ms, 1m30s).",
)
@_opt(
    "--auth-token",
    default="simple",
    show_default=True,
    help="'simple' or 'jwt,pub-key=...,priv-key=...,sign-method=...[,ttl=5m]'.",
)
@_opt("--auth-token-ttl", type=int, default=300, show_default=True, help="Seconds (simple).")
@_opt("--cert-file", default="", help="Client server TLS cert file.")
@_opt("--key-file", default="", help="Client server TLS key file.")
@_opt("--trusted-ca-file", default="", help="Client server TLS trusted CA (implies client certs).")
@_opt("--client-cert-auth", is_flag=True, default=False, help="Verify client certs; CN = user.")
@_opt("--auto-tls", is_flag=True, default=False, help="Client TLS with a self-signed certificate.")
@_opt("--peer-cert-file", default="", help="Peer TLS cert file.")
@_opt("--peer-key-file", default="", help="Peer TLS key file.")
@_opt("--peer-trusted-ca-file", default="", help="Peer TLS trusted CA file.")
@_opt("--peer-client-cert-auth", is_flag=True, default=False, help="Check peer certificates.")
@_opt(
    "--log-level",
    type=click.Choice(["debug", "info", "warn", "error"]),
    default="info",
    show_default=True,
)
@_opt(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default="json",
    show_default=True,
    help="json: one JSON object per line (etcd 3.5's default); text: for a terminal.",
)
@_opt(
    "--log-outputs",
    default="default",
    show_default=True,
    help="Comma separated: stderr, stdout, default (= stderr) or a file path.",
)
@_opt("--enable-distributed-tracing", is_flag=True, help="OpenTelemetry spans per request.")
@_opt(
    "--distributed-tracing-address",
    default=tracing.DEFAULT_ADDRESS,
    show_default=True,
    help="OTLP/gRPC collector.",
)
@_opt("--distributed-tracing-service-name", default=tracing.DEFAULT_SERVICE_NAME, show_default=True)
@_opt("--distributed-tracing-instance-id", default="")
@_opt(
    "--distributed-tracing-sampling-rate",
    type=int,
    default=0,
    show_default=True,
    help="Samples per million (requests sampled by the caller are always traced).",
)
def _command(**kw: Any) -> None:
    """Run a kvstore cluster member (etcd v3 API compatible)."""
    # The ONE place the process's logging is configured (kvstore/logsetup.py).
    try:
        logsetup.configure(kw["log_format"], kw["log_level"], kw["log_outputs"])
    except (ValueError, OSError) as exc:
        _die(f"--log-outputs/--log-format: {exc}", EXIT_BAD_CONFIG)
    cfg = build_config(kw)
    try:
        http_urls = split_urls(kw["listen_client_http_urls"], "--listen-client-http-urls")
    except ConfigError as exc:
        _die(str(exc), EXIT_BAD_CONFIG)
    try:
        tracing_cfg = tracing.TracingConfig(
            enabled=kw["enable_distributed_tracing"],
            address=kw["distributed_tracing_address"],
            service_name=kw["distributed_tracing_service_name"],
            instance_id=kw["distributed_tracing_instance_id"],
            sampling_rate_per_million=kw["distributed_tracing_sampling_rate"],
        ).validate()
    except ValueError as exc:
        _die(str(exc), EXIT_BAD_CONFIG)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            code = runner.run(serve(cfg, tracing_cfg, client_http_urls=http_urls))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when available (KVSTORE_UVLOOP=0 opts out), else asyncio's default.

    Why: a member is bound by per-call event-loop overhead (grpc.aio callbacks,
    futures, the raft driver's wake-ups); uvloop's loop cuts the server CPU per
    request noticeably (measured with benchmarks/kv_bench.py) and grpc.aio runs
    on any asyncio loop. Without uvloop (not installed, other platforms) the
    behaviour is identical, only slower."""
    if os.environ.get("KVSTORE_UVLOOP", "1").lower() in ("0", "false", "no", "off"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def build_config(kw: dict[str, Any]) -> NodeConfig:
    try:
        listen_client = split_urls(kw["listen_client_urls"], "--listen-client-urls")
        cfg = NodeConfig(
            name=kw["name"],
            data_dir=kw["data_dir"],
            listen_client_urls=listen_client,
            advertise_client_urls=split_urls(kw["advertise_client_urls"], "--advertise-client-urls")
            or listen_client,
            listen_peer_urls=split_urls(kw["listen_peer_urls"], "--listen-peer-urls"),
            initial_advertise_peer_urls=split_urls(
                kw["initial_advertise_peer_urls"], "--initial-advertise-peer-urls"
            ),
            initial_cluster=kw["initial_cluster"],
            initial_cluster_state=kw["initial_cluster_state"],
            initial_cluster_token=kw["initial_cluster_token"],
            heartbeat_interval_ms=kw["heartbeat_interval"],
            election_timeout_ms=kw["election_timeout"],
            snapshot_count=kw["snapshot_count"],
            max_request_bytes=kw["max_request_bytes"],
            listen_metrics_urls=split_urls(kw["listen_metrics_urls"], "--listen-metrics-urls"),
            quota_backend_bytes=kw["quota_backend_bytes"],
            auto_compaction_mode=kw["auto_compaction_mode"],
            auto_compaction_retention=kw["auto_compaction_retention"],
            watch_progress_notify_interval_s=parse_duration(
                kw["experimental_watch_progress_notify_interval"],
                "--experimental-watch-progress-notify-interval",
            ),
            auth_token=kw["auth_token"],
            auth_token_ttl_s=kw["auth_token_ttl"],
            client_cert_auth=kw["client_cert_auth"],
            cert_file=kw["cert_file"],
            key_file=kw["key_file"],
            trusted_ca_file=kw["trusted_ca_file"],
            auto_tls=kw["auto_tls"],
            peer_cert_file=kw["peer_cert_file"],
            peer_key_file=kw["peer_key_file"],
            peer_trusted_ca_file=kw["peer_trusted_ca_file"],
            peer_client_cert_auth=kw["peer_client_cert_auth"],
        )
        return cfg.validate()
    except ConfigError as exc:
        _die(str(exc), EXIT_BAD_CONFIG)
        raise AssertionError("unreachable") from exc


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}  # fmt: skip
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)")


def parse_duration(value: str, flag: str) -> float:
    """A Go duration ("10m", "200ms", "1m30s", "1.5h") in seconds, as etcd's
    duration flags take them; ConfigError (one line) otherwise."""
    text = value.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ConfigError(f"{flag}: invalid duration {value!r} (e.g. 10m, 200ms, 1m30s)")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ConfigError(f"{flag}: invalid duration {value!r} (e.g. 10m, 200ms, 1m30s)")
    return total


def _die(message: str, code: int) -> None:
    click.echo(f"kvstore: error: {message}", err=True)
    sys.exit(code)


def _freeze_startup_heap() -> None:
    """Move everything alive after startup (modules, protobuf descriptors,
    grpc, the node's tables) out of the garbage collector's reach. A full
    collection then scans only what was made since: measured under put load,
    40-60 ms pauses became under 10 ms (each one stalls every request)."""
    gc.collect()
    gc.freeze()


async def serve(
    cfg: NodeConfig,
    tracing_cfg: tracing.TracingConfig | None = None,
    client_http_urls: tuple[str, ...] | list[str] = (),
) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit code.

    `client_http_urls`: where the JSON gateway listens (with the probes; both
    are also on cfg.listen_metrics_urls)."""
    # Deferred: RocksDB and the node's modules load here, not when the
    # command only parses flags, prints --help or refuses a bad flag.
    import grpc

    from kvstore.api import add_servicers, grpc_server_options
    from kvstore.gateway.portshare import experimental_shared_socket
    from kvstore.gateway.server import GatewayServer
    from kvstore.server.runtime import KvNode, bind
    from kvstore.server.tls_parts import client_credentials, metrics_ssl_context

    options = grpc_server_options(cfg.max_request_bytes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Tracing off (the default): no interceptor at all, the request path is unchanged.
    traced = tracing.setup(tracing_cfg) if tracing_cfg is not None else None
    interceptors = [traced.interceptor] if traced is not None else None
    client_server = grpc.aio.server(options=options, interceptors=interceptors)
    node = KvNode(cfg)
    metrics: GatewayServer | None = None
    # "" unless KVSTORE_EXPERIMENTAL_SHARED_CLIENT_PORT=1 (off: costs gRPC >5 %).
    shared_sock = experimental_shared_socket()
    try:
        client_tls = client_credentials(cfg)
        for url in () if shared_sock else cfg.listen_client_urls:
            bind(client_server, url, "--listen-client-urls",
                 client_tls.credentials if client_tls else None)  # fmt: skip
        if shared_sock:
            client_server.add_insecure_port(f"unix:{shared_sock}")
        await node.start()
        assert node.kv is not None
        logsetup.set_member(node.kv.member_id, node.kv.cluster_id)
        add_servicers(client_server, node.kv, max_request_bytes=cfg.max_request_bytes)
        await client_server.start()
        _freeze_startup_heap()
        # The JSON gateway + probes (kvstore.gateway): HTTP/1.1 listeners.
        metrics = GatewayServer(node, max_request_bytes=cfg.max_request_bytes)
        await metrics.start(
            [(u, "--listen-client-http-urls") for u in client_http_urls]
            + [(u, "--listen-metrics-urls") for u in cfg.listen_metrics_urls],
            metrics_ssl_context(cfg, client_http_urls),
        )
        if shared_sock:
            await metrics.share(cfg.listen_client_urls, shared_sock)
    except Exception as exc:  # noqa: BLE001 - every startup failure is one line
        if not isinstance(exc, DataDirError | StartupError | ConfigError):
            log.debug("startup failed", exc_info=True)
            exc = StartupError(f"startup failed: {type(exc).__name__}: {exc}")
        await client_server.stop(grace=0)
        if metrics is not None:
            await metrics.stop()
        await node.stop()
        if traced is not None:
            traced.shutdown()
        click.echo(f"kvstore: error: {exc}", err=True)
        return EXIT_STARTUP
    addrs = ", ".join(u.split("://", 1)[-1] for u in cfg.listen_client_urls)
    note = metrics.ready_note(client_http_urls)  # where the JSON gateway is
    print(f"kvstore: ready to serve client requests on {addrs}{note}", flush=True)
    _log_startup(cfg, node)
    log.info(
        "member %s (%x) of cluster %x started; data dir %s",
        cfg.name, node.kv.member_id, node.kv.cluster_id, cfg.data_dir,
    )  # fmt: skip
    code = await _wait_for_stop(stop, node)
    log.info("shutting down")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    await client_server.stop(grace=SHUTDOWN_GRACE_S)
    if metrics is not None:
        await metrics.stop()
    await node.stop()
    if traced is not None:
        traced.shutdown()  # flush the spans not exported yet
    return code


def _log_startup(cfg: NodeConfig, node: KvNode) -> None:
    """What an operator needs, one line each (as fields in JSON)."""
    from kvstore.server.kv_server import SERVER_VERSION

    try:
        version = importlib.metadata.version("kvstore")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    urls = [*cfg.listen_client_urls, *cfg.listen_peer_urls, *cfg.listen_metrics_urls]
    tls = any(u.startswith("https://") for u in urls)
    auth = node.kv is not None and node.kv.auth is not None and node.kv.auth.store.enabled
    lines: list[tuple[str, dict[str, Any]]] = [
        (f"kvstore version {version} (etcd API {SERVER_VERSION})",
         {"kvstore_version": version, "etcd_api_version": SERVER_VERSION}),
        (f"member name {cfg.name}, member id {node.kv.member_id:x}", {"member_name": cfg.name}),
        (f"cluster id {node.kv.cluster_id:x}", {}),
        (f"data dir {cfg.data_dir}", {"data_dir": str(cfg.data_dir)}),
        ("listening for client requests on " + ", ".join(cfg.listen_client_urls),
         {"listen_client_urls": list(cfg.listen_client_urls),
          "advertise_client_urls": list(cfg.advertise_client_urls)}),
        ("listening for peers on " + ", ".join(cfg.listen_peer_urls),
         {"listen_peer_urls": list(cfg.listen_peer_urls)}),
        ("listening for metrics on " + (", ".join(cfg.listen_metrics_urls) or "(none)"),
         {"listen_metrics_urls": list(cfg.listen_metrics_urls)}),
        (f"client/peer TLS {'on' if tls else 'off'}", {"tls": tls}),
        (f"authentication {'on' if auth else 'off'}", {"auth": auth}),
    ]  # fmt: skip
    for message, fields in lines:
        log.info("%s", message, extra=fields)


async def _wait_for_stop(stop: asyncio.Event, node: KvNode) -> int:
    """Return 0 on SIGTERM/SIGINT or once the member is removed from the
    cluster (etcd exits 0 then too), 1 if the Raft driver died."""
    driver_task = node.driver.task if node.driver is not None else None
    stop_task = asyncio.create_task(stop.wait())
    removed_task = asyncio.create_task(node.removed.wait())
    waiting = {stop_task}
    waiting |= {driver_task} if driver_task is not None else set()
    waiting |= {removed_task} if removed_task is not None else set()
    try:
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stop_task, removed_task):
            if task is not None and not task.done():
                task.cancel()
    if stop_task in done:
        return 0
    if removed_task is not None and removed_task in done:
        # etcd 3.4's two lines, word for word.
        log.error("%s", MEMBER_REMOVED)
        log.info("the data-dir used by this member must be removed.")
        # Let the removal's commit reach the others first (a signal cuts it short).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REMOVED_STOP_DELAY_S)
        return 0
    click.echo("kvstore: error: the raft driver stopped unexpectedly", err=True)
    return EXIT_STARTUP


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click errors become one line, exit code 2.

    `kvstore snapshot restore|status ...` goes to the offline snapshot tools."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "snapshot":
        # Deferred: only the offline snapshot tools need their module.
        from kvstore.cli.snapshot_cmd import main as snapshot_main

        snapshot_main(args[1:])
        return
    try:
        _command.main(args=args, prog_name="kvstore", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.ClickException as exc:
        _die(exc.format_message().replace("\n", " "), EXIT_BAD_CONFIG)
    except click.exceptions.Abort:
        sys.exit(1)


if __name__ == "__main__":
    main()
