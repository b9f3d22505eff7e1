"""The kvstore node: driver around the Raft core, apply path, KvServer facade.

Owns: wiring raft, storage, mvcc and transport into one running member.
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
  runtime.py      KvNode: one running member (data dir, core, transport, driver)
  http.py         /health, /version, /metrics listener

Extension points for later parts (all on one KvNode `node` after `start()`):
  node.driver.watch_hook = fn           # fn([(revision, [mvccpb.Event])]) after each apply
  node.driver.leadership_listeners.append(fn)   # fn(is_leader, leader_id, term)
  node.applier.register("lease_grant", fn)      # fn(mvcc_batch, request) -> response
  node.kv.propose("lease_revoke", request)      # any InternalRequest kind, via Raft
  node.kv.store.lease_hooks = lessor            # MvccStore lease attach/detach
  node.kv.leader_endpoint()                     # leader's client host:port (forwarding)
"""
