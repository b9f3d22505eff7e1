"""Data dir: bootstrap a new member or recover an existing one, never wipe.

Owns: deciding new vs. existing, the identity check (stored cluster id /
member id / name against the flags), writing the identity and initial member
table on first start, and opening the storage objects the node runs on.
A bootstrapping member's identity comes from its flags; a joining member's
(first start with `--initial-cluster-state existing`) from the JoinInfo the
caller fetched from the running cluster; a restart's from member.json.

Layout:  <data-dir>/member.json   name, member id, cluster id (checked before
                                   RocksDB is opened, so a refusal changes nothing)
         <data-dir>/db/   one RocksDB (column families kv, meta, lease,
                          raft_log, raft_state) — raft log, hard state, MVCC
                          data and the applied index live in one database so a
                          synced raft write also makes earlier apply batches
                          durable. After a Raft snapshot install the state
                          families are a later generation (`kv@g<n>`, ...);
                          `Backend.open` is the startup recovery of an
                          install a crash interrupted: it keeps the generation
                          the database records and drops the other one.

Never: deletes or rewrites anything in an existing data dir it refuses; every
refusal is a DataDirError with one line naming the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from kvstore.mvcc import LeaseHooks, MvccStore
from kvstore.raft.types import ConfChange, ConfChangeType, Entry, EntryType, HardState
from kvstore.seams import DurableLog
from kvstore.server.applier import APPLIED_INDEX_KEY, encode_member_context
from kvstore.server.config import NodeConfig
from kvstore.server.errors import DataDirError
from kvstore.server.membership import MEMBERS_META_KEY, JoinInfo, Member, MemberTable
from kvstore.storage.backend import Backend
from kvstore.storage.codec import decode_u64, encode_u64
from kvstore.storage.fsutil import fsync_dir
from kvstore.storage.raft_log import RocksLogStorage

CLUSTER_ID_KEY = b"cluster_id"
MEMBER_ID_KEY = b"member_id"
NAME_KEY = b"member_name"
DB_DIRNAME = "db"
# Plain-text identity, checked BEFORE RocksDB is opened: refusing a data dir
# that belongs to another member must not modify a single file in it.
IDENTITY_FILE = "member.json"


# --auto-tls certificates (etcd's <data-dir>/fixtures), made before the data
# dir is opened: not a sign of a foreign directory.
FIXTURES_DIRNAME = "fixtures"


@dataclass
class OpenedDataDir:
    path: Path
    backend: Backend
    log_storage: RocksLogStorage
    store: MvccStore
    members: MemberTable
    applied_index: int
    cluster_id: int
    member_id: int
    is_new: bool
    joining: bool  # started with --initial-cluster-state existing and no data

    def close(self) -> None:
        # Closing on the way out must not raise.
        with contextlib.suppress(Exception):
            self.backend.close()


@dataclass(frozen=True)
class Identity:
    name: str
    member_id: int
    cluster_id: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "member_id": f"{self.member_id:x}",
                "cluster_id": f"{self.cluster_id:x}",
            }
        )

    @classmethod
    def load(cls, file: Path) -> Identity:
        try:
            obj = json.loads(file.read_text())
            return cls(obj["name"], int(obj["member_id"], 16), int(obj["cluster_id"], 16))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataDirError(f"data dir {file.parent}: unreadable {file.name} ({exc})") from exc

    def write(self, path: Path) -> None:
        tmp = path / (IDENTITY_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / IDENTITY_FILE)
        fsync_dir(path)


def check_identity(cfg: NodeConfig, path: Path, ident: Identity) -> None:
    """Refuse (DataDirError) when the dir belongs to another member or cluster."""
    if ident.name != cfg.name:
        raise DataDirError(
            f"data dir {path} belongs to member {ident.name!r}, not --name {cfg.name!r}"
        )
    # A member that joined a running cluster got its ids from the cluster
    # (MemberAdd salts the member id), so its flags cannot reproduce them:
    # only a bootstrapping member's ids are checked against the flags.
    if cfg.initial_cluster_state != "new":
        return
    if ident.member_id != cfg.member_id:
        raise DataDirError(
            f"data dir {path} belongs to member id {ident.member_id:x}, but the flags give "
            f"member id {cfg.member_id:x} (different --initial-advertise-peer-urls or "
            "--initial-cluster-token?)"
        )
    if ident.cluster_id != cfg.cluster_id:
        raise DataDirError(
            f"data dir {path} belongs to cluster {ident.cluster_id:x}, but --initial-cluster "
            f"gives cluster {cfg.cluster_id:x}"
        )


def needs_join(cfg: NodeConfig) -> bool:
    """True when starting `cfg` must first fetch its ids from the running
    cluster: `--initial-cluster-state existing` and no identity in the data dir."""
    return (
        cfg.initial_cluster_state == "existing"
        and not (Path(cfg.data_dir) / IDENTITY_FILE).exists()
    )


def open_data_dir(
    cfg: NodeConfig, join: JoinInfo | None = None, *, lease_hooks: LeaseHooks | None = None
) -> OpenedDataDir:
    """Open (bootstrapping if new) the data dir of `cfg` (already validated).

    `join` (from kvstore.server.join) is required when `needs_join(cfg)`: the
    ids and member table the running cluster gave this member. `lease_hooks`
    (the node's Lessor) is given to the MVCC store it opens."""

    path = Path(cfg.data_dir)
    db = path / DB_DIRNAME
    id_file = path / IDENTITY_FILE
    if path.exists() and not path.is_dir():
        raise DataDirError(f"data dir {path} is not a directory")
    if path.is_dir() and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise DataDirError(f"data dir {path} is not readable and writable by this user")
    fresh = not id_file.exists()
    if not fresh:
        ident = Identity.load(id_file)
        check_identity(cfg, path, ident)
        join = None  # a restart never re-joins: the data dir knows its cluster
    elif path.is_dir() and any(p.name != FIXTURES_DIRNAME for p in path.iterdir()):
        raise DataDirError(
            f"data dir {path} is not empty and is not a kvstore data dir "
            f"({IDENTITY_FILE} missing); refusing to use it"
        )
    elif cfg.initial_cluster_state == "existing":
        if join is None:
            raise DataDirError(
                f"data dir {path} is new and --initial-cluster-state is existing: the "
                "member list must be fetched from the cluster first"
            )
        ident = Identity(cfg.name, join.member_id, join.cluster_id)
    else:
        ident = Identity(cfg.name, cfg.member_id, cfg.cluster_id)
    try:
        if fresh:
            path.mkdir(parents=True, exist_ok=True)
            ident.write(path)
        backend = Backend.open(str(db))
    except PermissionError as exc:
        raise DataDirError(f"cannot open data dir {path}: permission denied ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - RocksDB raises plain exceptions
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataDirError(f"cannot open data dir {path}: {msg}") from exc
    try:
        # Bootstrap writes the member id to meta last, so a first start that
        # crashed half-way is simply bootstrapped again (same entries, same ids).
        is_new = _meta(backend, MEMBER_ID_KEY) is None
        store = MvccStore(backend, lease_hooks)
        return _open(cfg, path, backend, is_new, ident, join, RocksLogStorage(backend), store)
    except DataDirError:
        backend.close()
        raise
    except Exception as exc:  # noqa: BLE001
        backend.close()
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataDirError(f"data dir {path} is corrupt or unreadable: {msg}") from exc


def _meta(backend: Backend, key: bytes) -> bytes | None:
    value = backend.get("meta", key)
    return bytes(value) if value is not None else None


def _open(
    cfg: NodeConfig,
    path: Path,
    backend: Backend,
    is_new: bool,
    ident: Identity,
    join: JoinInfo | None,
    log_storage: RocksLogStorage,
    store: MvccStore,
) -> OpenedDataDir:
    if is_new:
        joining = cfg.initial_cluster_state == "existing"
        if joining:
            # The member table fetched from the cluster: the transport can
            # answer the leader at once; the log (or a snapshot) then replays
            # the membership history over it, ending in the same table.
            # (No JoinInfo: a first start that crashed after writing member.json;
            # the flags' peers are the best guess of whom to answer.)
            members = MemberTable.decode(join.members.encode()) if join else _flag_peers(cfg)
        else:
            members = _flag_peers(cfg)
            bootstrap_log(log_storage, members.all())
        batch = store.begin_batch()
        batch.set_meta(CLUSTER_ID_KEY, encode_u64(ident.cluster_id))
        batch.set_meta(NAME_KEY, cfg.name.encode())
        batch.set_meta(MEMBERS_META_KEY, members.encode())
        batch.set_meta(APPLIED_INDEX_KEY, encode_u64(0))
        batch.set_meta(MEMBER_ID_KEY, encode_u64(ident.member_id))
        batch.commit(sync=True)
        return OpenedDataDir(
            path, backend, log_storage, store, members, 0,
            ident.cluster_id, ident.member_id, is_new=True, joining=joining,
        )  # fmt: skip

    cid = decode_u64(_meta(backend, CLUSTER_ID_KEY))
    mid = decode_u64(_meta(backend, MEMBER_ID_KEY))
    if mid != ident.member_id or cid != ident.cluster_id:
        raise DataDirError(
            f"data dir {path}: database belongs to member {mid:x} of cluster {cid:x}, "
            f"but {IDENTITY_FILE} says member {ident.member_id:x} of {ident.cluster_id:x}"
        )
    raw_members = _meta(backend, MEMBERS_META_KEY)
    members = MemberTable.decode(raw_members) if raw_members else MemberTable()
    applied = decode_u64(_meta(backend, APPLIED_INDEX_KEY))
    return OpenedDataDir(
        path, backend, log_storage, store, members, applied,
        cid, mid, is_new=False, joining=False,
    )  # fmt: skip


def _flag_peers(cfg: NodeConfig) -> MemberTable:
    members = MemberTable()
    for peer in cfg.peers.values():
        members.upsert(Member(peer.id, peer.name, list(peer.peer_urls)))
    return members


def bootstrap_entries(peers: list[Member]) -> list[Entry]:
    """The first log entries of a brand-new cluster, identical on every member.

    Like etcd's bootstrap (raft.Bootstrap): one committed ADD_NODE conf change
    per initial member at term 1, indexes 1..n, in member-id order. Keeping the
    initial configuration in the log (not only in local storage) lets a member
    that joins later learn it by replicating the log from index 1."""
    return [
        Entry(
            term=1,
            index=i,
            type=EntryType.CONF_CHANGE,
            data=ConfChange(ConfChangeType.ADD_NODE, m.id, encode_member_context(m)).encode(),
        )
        for i, m in enumerate(sorted(peers, key=lambda m: m.id), start=1)
    ]


def bootstrap_log(log_storage: DurableLog, peers: list[Member]) -> None:
    """Durably write the bootstrap entries with a hard state that commits them."""
    entries = bootstrap_entries(peers)
    log_storage.save(HardState(term=1, vote=0, commit=len(entries)), entries, None, True)
