"""Watch: serve etcd watches from this node's applied state.

Public surface: `WatchHub` (one per node; `publish` is the apply loop's
watch hook), `WatchStream` (one per gRPC Watch stream), `Watcher`.
Never imports server/ or api/ (dependencies point one way: server -> watch).
"""

from kvstore.watch.hub import WatchHub
from kvstore.watch.stream import WatchStream
from kvstore.watch.watcher import Watcher

__all__ = ["WatchHub", "WatchStream", "Watcher"]
