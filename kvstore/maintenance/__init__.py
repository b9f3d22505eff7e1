"""Operator features: backups/restore, hashes, defragmentation, space quota
alarms, auto-compaction and Raft snapshot transfer (issue 5).

Owns: the snapshot file format (backup.py) shared by `Maintenance/Snapshot`,
`kvstore snapshot restore` and the Raft snapshot stream; the policies behind
the Maintenance RPCs. Never: edits Raft or MVCC internals except through the
narrow hooks documented in each module.
"""
