"""NodeConfig: one member's validated settings, and etcd-style member/cluster ids.

Owns: flag validation (one clear line per problem, raised as ConfigError) and
the id recipes (etcd's `computeMemberId` / `genID`):

  member id  = first 8 bytes (big-endian) of sha1(sorted peer URLs + cluster token
                                                  [+ decimal salt])
  cluster id = first 8 bytes (big-endian) of sha1(sorted member ids, 8 bytes each)

Bootstrapping members (`--initial-cluster-state new`) derive every id without
talking to each other (no salt). A member added at runtime gets a salted id
(MemberAdd mixes in the time, so re-adding the peer URLs of a removed member
gives a new id); a joining member (`existing`) therefore cannot compute its
ids: it learns its member id and the cluster id from the running members
(kvstore.server.join), and `cluster_id` is left 0 here.
Never: touches the disk or the network.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kvstore.auth.errors import AuthError
from kvstore.auth.tokens import parse_auth_token
from kvstore.maintenance.compaction import parse_retention

DEFAULT_NAME = "default"
DEFAULT_CLIENT_URL = "http://127.0.0.1:2379"
DEFAULT_PEER_URL = "http://127.0.0.1:2380"
DEFAULT_TOKEN = "etcd-cluster"


class ConfigError(ValueError):
    """A bad flag or setting; the message is one line meant for the user."""


def member_id(peer_urls: list[str] | tuple[str, ...], token: str, salt: int | None = None) -> int:
    """etcd's computeMemberId: `salt` is etcd's `now` (MemberAdd passes the time)."""
    data = "".join(sorted(peer_urls)).encode() + token.encode()
    if salt is not None:
        data += str(salt).encode()
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]


def cluster_id(member_ids: list[int] | tuple[int, ...]) -> int:
    data = b"".join(struct.pack(">Q", m) for m in sorted(member_ids))
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]


def split_urls(value: str, flag: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in value.split(",") if u.strip())
    for url in urls:
        host_port(url, flag)
    return urls


def host_port(url: str, flag: str = "url") -> tuple[str, int]:
    """'http://127.0.0.1:2379' -> ('127.0.0.1', 2379); ConfigError if malformed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag}: invalid URL {url!r} (expected http://host:port)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ConfigError(f"{flag}: URL {url!r} has no valid port")
    return parts.hostname, port


def parse_initial_cluster(value: str) -> dict[str, tuple[str, ...]]:
    """'a=http://h:1,b=http://h:2,a=http://h:3' -> {'a': (url1, url3), 'b': (url2,)}."""
    members: dict[str, list[str]] = {}
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ConfigError(
                f"--initial-cluster: invalid entry {item!r} (expected name=http://host:port)"
            )
        host_port(url, "--initial-cluster")
        members.setdefault(name, []).append(url)
    if not members:
        raise ConfigError("--initial-cluster is empty")
    return {name: tuple(urls) for name, urls in members.items()}


def _check_retention(mode: str, value: str) -> None:
    """Validate --auto-compaction-retention with the compactor's own parser."""
    try:
        parse_retention(mode, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class PeerSpec:
    id: int
    name: str
    peer_urls: tuple[str, ...]


@dataclass
class NodeConfig:
    name: str = DEFAULT_NAME
    data_dir: str = ""
    listen_client_urls: tuple[str, ...] = (DEFAULT_CLIENT_URL,)
    advertise_client_urls: tuple[str, ...] = (DEFAULT_CLIENT_URL,)
    listen_peer_urls: tuple[str, ...] = (DEFAULT_PEER_URL,)
    initial_advertise_peer_urls: tuple[str, ...] = (DEFAULT_PEER_URL,)
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = DEFAULT_TOKEN
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    snapshot_count: int = 100_000
    max_request_bytes: int = 1_572_864
    listen_metrics_urls: tuple[str, ...] = ()
    quota_backend_bytes: int = 0  # 0: default quota (2 GiB), like etcd
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"  # "0": off
    # etcd --experimental-watch-progress-notify-interval (default 10m).
    watch_progress_notify_interval_s: float = 600.0
    # Auth (issue 15): etcd's --auth-token (simple | jwt,...) and
    # --auth-token-ttl (seconds, simple tokens); --client-cert-auth makes a
    # verified client certificate's CN the user of a request without a token.
    auth_token: str = "simple"
    auth_token_ttl_s: int = 300
    client_cert_auth: bool = False
    # TLS (etcd's flags; an https:// URL turns a listener's TLS on).
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    auto_tls: bool = False
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_trusted_ca_file: str = ""
    peer_client_cert_auth: bool = False
    # Derived by validate(). For a joining member (`existing`) these are only
    # the flag-derived defaults: the real ids come from the cluster at first
    # start and are kept in the data dir (OpenedDataDir.member_id/cluster_id).
    peers: dict[int, PeerSpec] = field(default_factory=dict)
    member_id: int = 0
    cluster_id: int = 0

    def _validate_auth(self) -> None:
        if self.auth_token_ttl_s <= 0:
            raise ConfigError("--auth-token-ttl must be a positive number of seconds")
        try:  # reads the jwt key files: a bad flag stops the start, in one line
            parse_auth_token(self.auth_token, lambda: 1, self.auth_token_ttl_s)
        except AuthError as exc:
            raise ConfigError(f"--auth-token: {exc}") from None

    @property
    def tick_interval_s(self) -> float:
        return self.heartbeat_interval_ms / 1000.0

    @property
    def election_ticks(self) -> int:
        return max(2, self.election_timeout_ms // self.heartbeat_interval_ms)

    @property
    def heartbeat_ticks(self) -> int:
        return 1

    @property
    def election_timeout_s(self) -> float:
        return self.election_timeout_ms / 1000.0

    def validate(self) -> NodeConfig:
        """Check every setting and derive ids; raise ConfigError (one line)."""
        if not self.name:
            raise ConfigError("--name must not be empty")
        if not self.data_dir:
            self.data_dir = f"{self.name}.kvstore"
        self._validate_auth()
        if self.heartbeat_interval_ms <= 0:
            raise ConfigError("--heartbeat-interval must be a positive number of milliseconds")
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms:
            raise ConfigError(
                f"--election-timeout[{self.election_timeout_ms}ms] should be at least "
                f"5 times as --heartbeat-interval[{self.heartbeat_interval_ms}ms]"
            )
        if self.election_timeout_ms > 50_000:
            raise ConfigError(
                f"--election-timeout[{self.election_timeout_ms}ms] is too long, "
                "and should be set less than 50 seconds"
            )
        if self.snapshot_count <= 0:
            raise ConfigError("--snapshot-count must be positive")
        if self.max_request_bytes <= 0:
            raise ConfigError("--max-request-bytes must be positive")
        if self.watch_progress_notify_interval_s <= 0:
            raise ConfigError("--experimental-watch-progress-notify-interval must be positive")
        if self.quota_backend_bytes < 0:
            raise ConfigError("--quota-backend-bytes must not be negative")
        if self.auto_compaction_mode not in ("periodic", "revision"):
            raise ConfigError(
                f"--auto-compaction-mode must be 'periodic' or 'revision' "
                f"(got {self.auto_compaction_mode!r})"
            )
        _check_retention(self.auto_compaction_mode, self.auto_compaction_retention)
        if self.initial_cluster_state not in ("new", "existing"):
            raise ConfigError(
                f"--initial-cluster-state must be 'new' or 'existing' "
                f"(got {self.initial_cluster_state!r})"
            )
        if not self.initial_cluster_token:
            raise ConfigError("--initial-cluster-token must not be empty")
        for flag, urls in (
            ("--listen-client-urls", self.listen_client_urls),
            ("--advertise-client-urls", self.advertise_client_urls),
            ("--listen-peer-urls", self.listen_peer_urls),
            ("--initial-advertise-peer-urls", self.initial_advertise_peer_urls),
            ("--listen-metrics-urls", self.listen_metrics_urls),
        ):
            for url in urls:
                host_port(url, flag)
        for flag, urls in (
            ("--listen-client-urls", self.listen_client_urls),
            ("--listen-peer-urls", self.listen_peer_urls),
            ("--initial-advertise-peer-urls", self.initial_advertise_peer_urls),
        ):
            if not urls:
                raise ConfigError(f"{flag} must not be empty")
        if not self.advertise_client_urls:
            self.advertise_client_urls = self.listen_client_urls
        initial = self.initial_cluster or ",".join(
            f"{self.name}={u}" for u in self.initial_advertise_peer_urls
        )
        cluster = parse_initial_cluster(initial)
        if self.name not in cluster:
            raise ConfigError(
                f"--initial-cluster must include this member (--name {self.name} not found)"
            )
        if sorted(cluster[self.name]) != sorted(self.initial_advertise_peer_urls):
            raise ConfigError(
                f"--initial-cluster has {self.name}={','.join(cluster[self.name])} but "
                f"--initial-advertise-peer-urls is {','.join(self.initial_advertise_peer_urls)}"
            )
        seen_urls: dict[str, str] = {}
        self.peers = {}
        for name, urls in cluster.items():
            for url in urls:
                if url in seen_urls:
                    raise ConfigError(
                        f"--initial-cluster: peer URL {url} used by both "
                        f"{seen_urls[url]} and {name}"
                    )
                seen_urls[url] = name
            mid = member_id(urls, self.initial_cluster_token)
            self.peers[mid] = PeerSpec(mid, name, urls)
        self.member_id = member_id(cluster[self.name], self.initial_cluster_token)
        if self.initial_cluster_state == "existing":
            # Joining: the cluster id (and the id MemberAdd gave this member)
            # are fetched from the members listed, as etcd does; no formula
            # over the flags survives a history of adds and removes.
            if not any(p.name != self.name for p in self.peers.values()):
                raise ConfigError(
                    "--initial-cluster-state existing needs the running members in "
                    "--initial-cluster (to fetch the member list from)"
                )
            self.cluster_id = 0
        else:
            self.cluster_id = cluster_id(list(self.peers))
        return self
