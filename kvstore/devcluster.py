"""`python -m kvstore.devcluster up|status|down`: the local cluster CLI.

The implementation lives with the other cluster tooling in
kvstore.testing.devcluster (LocalCluster, the same shape as
kvstore.testing.etcd_cluster.EtcdCluster, used by tests and benchmarks);
this module keeps the command and the import path.
Never: holds code of its own.
"""

from __future__ import annotations

from kvstore.testing.devcluster import (
    STATE_FILE,
    TOKEN,
    LocalCluster,
    _pid_alive,
    child_env,
    cli,
)

__all__ = ["STATE_FILE", "TOKEN", "LocalCluster", "_pid_alive", "child_env", "cli"]

if __name__ == "__main__":
    cli()
