"""A do-nothing etcd KV server, used to measure the load generator's own ceiling.

Owns: answering `etcdserverpb.KV/Put` and `/Range` on 127.0.0.1 with fixed,
prebuilt responses (Range returns one 256-byte key-value), so that a benchmark
against it measures only the generator, gRPC and the loopback.

Must never: store anything, listen on anything but 127.0.0.1, or run without a
bound (it exits after `--max-seconds` or on SIGTERM/SIGINT).

Run: `python benchmarks/_null_kv_server.py --port 23790 [--max-seconds 600]`;
prints "ready <port>" on stdout once serving. kv_bench.py starts it for
`--calibrate`. Note it is itself Python on the same cores, so the figure it
gives is min(generator ceiling, this server's ceiling): a lower bound on the
generator's ceiling; the generator's CPU column says which side was saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from kvstore.pb import kv_pb2, rpc_pb2, rpc_pb2_grpc  # noqa: E402


class NullKV(rpc_pb2_grpc.KVServicer):
    def __init__(self, value_size: int) -> None:
        header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)
        self._put = rpc_pb2.PutResponse(header=header)
        kv = kv_pb2.KeyValue(key=b"k", value=b"v" * value_size, create_revision=1, mod_revision=1)
        self._range = rpc_pb2.RangeResponse(header=header, kvs=[kv], count=1)

    async def Put(self, request, context):  # noqa: N802 - gRPC method name
        return self._put

    async def Range(self, request, context):  # noqa: N802 - gRPC method name
        return self._range


async def serve(port: int, max_seconds: float, value_size: int) -> None:
    server = grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(NullKV(value_size), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"ready {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):  # the bound: exit after max_seconds
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    await server.stop(grace=1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument("--value-size", type=int, default=256)
    a = ap.parse_args()
    asyncio.run(serve(a.port, a.max_seconds, a.value_size))


if __name__ == "__main__":
    main()
