"""Generated protobuf / gRPC modules for kvstore (etcd v3 API + internal messages).

GENERATED CODE -- DO NOT EDIT. Sources: proto/kvstore/pb/*.proto.
Regenerate with `python scripts/gen_proto.py`; tests/test_proto_fresh.py fails when stale.
Import as `from kvstore.pb import rpc_pb2, rpc_pb2_grpc, kv_pb2`.
"""
