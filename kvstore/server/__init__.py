"""The kvstore node: composition root, driver around the Raft core, apply path,
KvServer facade.

Owns: building raft, storage, mvcc, leases, watches, maintenance and
transport into one running member (assembly.py) and running it.
Never: imported by raft/, storage/, mvcc/ (dependencies point one way).

Modules (one job each):
  config.py       NodeConfig (flags, validation, etcd-style member/cluster ids)
  datadir.py      bootstrap a new data dir / recover an existing one, identity checks
  node.py         NodeDriver: the only task that touches RaftCore (Ready loop)
  applier.py      committed entries -> MVCC batch (+ applied index) -> results
  waiters.py      proposal futures and applied-index waits
  kv_server.py    KvServer: the facade the api/ servicers call
  cluster_ops.py  MemberAdd/Remove/Update/Promote and MoveLeader
  membership.py   member table (names, peer and client URLs)
  assembly.py     NodeParts: THE composition root (every part, through constructors)
  proposer.py     Proposer: propose through Raft + response headers (all facades)
  runtime.py      KvNode: one running member's lifecycle (start, publish, removal, stop)
  metrics.py      NodeMetrics (Prometheus; the write-path observer)
  rpc_stats.py    per-method gRPC counters
  http.py         /health, /version, /metrics listener

Seams between the parts are the Protocols of kvstore.seams; every callback a
part needs is a constructor argument (see assembly.py), nothing is attached
after construction.
"""
