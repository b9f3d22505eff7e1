"""etcd-compatible MVCC: revisions, key index, ranges, txns, compaction on the backend.

Public surface: `MvccStore`, `MvccBatch`, `LeaseHooks`, `Revision`.
Never imports server/, api/, lease/ or watch/ (dependencies point one way).
"""

from kvstore.mvcc.batch import MvccBatch
from kvstore.mvcc.hooks import LeaseHooks, NoLeases
from kvstore.mvcc.revision import Revision
from kvstore.mvcc.store import MvccStore

__all__ = ["LeaseHooks", "MvccBatch", "MvccStore", "NoLeases", "Revision"]
