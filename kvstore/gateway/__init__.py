"""etcd's HTTP/JSON gateway and health probes: another API edge, not another implementation.

Layout: `routes` (etcd's paths -> gRPC methods), `codec` (protobuf's
json_format, etcd's JSON conventions and error bodies), `context` (the
grpc servicer context the servicers see), `app` (aiohttp: one dispatcher
calling the SAME servicer methods the gRPC server registers), `probes`
(/version, /health, /livez, /readyz, /metrics), `auth_disabled` (Auth RPCs
while kvstore has no Auth service), `server` (the listeners), `portshare`
(EXPERIMENTAL: gRPC and HTTP/1.1 on one port).
Never: reads MVCC, proposes to Raft or validates requests itself: every
request goes through `api/` exactly as a gRPC call does.
"""
