"""Restore: build a brand-new member's data dir from a snapshot file.

Owns: `restore_data_dir` — verify the file's SHA-256, write its MVCC, lease
and replicated meta records into a fresh RocksDB under a temporary directory,
write the member identity derived from the flags (exactly as the server
derives it), then rename the directory into place. The first start of the
server with the same flags bootstraps a NEW cluster (new cluster id, fresh
Raft log) on top of the restored data, like `etcdctl snapshot restore`.
Never: touches an existing data dir (refuses), copies the source cluster's
member table, identity, applied index or Raft log.

Crash safety: everything is written to `<data-dir>.restore.tmp` and renamed
at the end, so a crash leaves either no data dir or a complete one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kvstore.maintenance.backup import (
    APPLIED_INDEX_KEY,
    APPLIED_TERM_KEY,
    MEMBERS_KEY,
    BackupError,
    read_records,
    verify_file,
)
from kvstore.server.config import ConfigError, NodeConfig
from kvstore.server.datadir import DB_DIRNAME, Identity
from kvstore.storage.backend import Backend
from kvstore.storage.fsutil import fsync_dir

# Replicated meta keys that describe the SOURCE cluster's Raft state: a
# restored member starts a new cluster, so they are not restored.
_SKIP_META = frozenset({APPLIED_INDEX_KEY, APPLIED_TERM_KEY, MEMBERS_KEY})
_BATCH_RECORDS = 10_000


class RestoreError(Exception):
    """One-line reason the restore was refused or failed."""


@dataclass
class RestoreResult:
    data_dir: str
    member_id: int
    cluster_id: int
    revisions_restored: int
    records: int


def restore_data_dir(
    snapshot_file: str,
    *,
    data_dir: str,
    name: str,
    initial_cluster: str,
    initial_cluster_token: str,
    initial_advertise_peer_urls: tuple[str, ...],
) -> RestoreResult:
    """Create `data_dir` from `snapshot_file`; raises RestoreError (one line)."""
    try:
        cfg = NodeConfig(
            name=name,
            data_dir=data_dir,
            initial_advertise_peer_urls=tuple(initial_advertise_peer_urls),
            initial_cluster=initial_cluster,
            initial_cluster_token=initial_cluster_token,
        ).validate()
    except ConfigError as exc:
        raise RestoreError(str(exc)) from exc
    target = Path(cfg.data_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RestoreError(f"data-dir {target} exists; refusing to overwrite it")
    try:
        verify_file(snapshot_file)
    except (BackupError, OSError) as exc:
        raise RestoreError(str(exc)) from exc

    tmp = target.with_name(target.name + ".restore.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # leftover of an interrupted restore: ours to remove
    tmp.mkdir(parents=True)
    records = 0
    keys = 0
    try:
        backend = Backend.open(str(tmp / DB_DIRNAME))
        try:
            batch = backend.batch()
            for family, key, value in read_records(snapshot_file, verify=False):
                if family == "meta" and key in _SKIP_META:
                    continue
                batch.put(family, key, value)
                records += 1
                if family == "kv":
                    keys += 1
                if len(batch) >= _BATCH_RECORDS:
                    backend.write(batch, False)
                    batch = backend.batch()
            backend.write(batch, True)
            backend.flush()
        finally:
            backend.close()
        Identity(cfg.name, cfg.member_id, cfg.cluster_id).write(tmp)
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BackupError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RestoreError(str(exc)) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RestoreResult(str(target), cfg.member_id, cfg.cluster_id, keys, records)
