"""The kvstore node: driver around the Raft core, apply path, KvServer facade.

Owns: wiring raft, storage, mvcc and transport into one running member.
Never: imported by raft/, storage/, mvcc/ (dependencies point one way).
"""
