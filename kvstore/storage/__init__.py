"""RocksDB side of kvstore: the backend (the only code that touches rocksdict),
the Raft log storage and snapshot files.

Never: imported by raft/ (the core stays pure); never imports mvcc/ or server/.
"""
