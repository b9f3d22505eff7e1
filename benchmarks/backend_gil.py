"""Does a synced RocksDB write (100-entry batch) release the GIL?

A worker thread runs synced 100-entry batch writes while the main thread spins
counting loop iterations. If rocksdict held the GIL during the write + fsync,
the main thread would stall for the whole write and its spin rate would drop
to roughly (1 - write_busy_fraction) of the baseline, with gaps as long as one
write. Run: python benchmarks/backend_gil.py [--seconds 3] [--dir PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

from kvstore.storage.backend import Backend


def spin(seconds: float) -> tuple[int, float]:
    """Iterations done and longest gap (s) between iterations."""
    count = 0
    worst = 0.0
    now = time.perf_counter()
    end = now + seconds
    while now < end:
        t = time.perf_counter()
        worst = max(worst, t - now)
        now = t
        count += 1
    return count, worst


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        backend = Backend.open(f"{tmp}/db")
        value = b"v" * 100
        stop = threading.Event()
        stats = {"writes": 0, "busy_s": 0.0, "max_write_s": 0.0}

        def writer() -> None:
            n = 0
            while not stop.is_set():
                batch = backend.batch()
                for i in range(100):
                    batch.put("kv", b"key-%08d" % (n * 100 + i), value)
                t0 = time.perf_counter()
                backend.write(batch, sync=True)
                dt = time.perf_counter() - t0
                stats["writes"] += 1
                stats["busy_s"] += dt
                stats["max_write_s"] = max(stats["max_write_s"], dt)
                n += 1

        base_count, base_gap = spin(args.seconds)
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            count, gap = spin(args.seconds)
        finally:
            stop.set()
            thread.join()
        backend.close()
    busy = stats["busy_s"] / args.seconds
    print(f"baseline spin: {base_count / args.seconds:,.0f} it/s, max gap {base_gap * 1e3:.2f} ms")
    print(f"with writer:   {count / args.seconds:,.0f} it/s, max gap {gap * 1e3:.2f} ms")
    print(
        f"writer: {stats['writes'] / args.seconds:,.0f} synced 100-entry batches/s, "
        f"busy {busy:.0%} of wall time, "
        f"mean {stats['busy_s'] / max(stats['writes'], 1) * 1e3:.2f} ms,"
        f" max {stats['max_write_s'] * 1e3:.2f} ms"
    )
    print(
        "GIL released during write" if count / base_count > max(0.5, 1 - busy) * 0.9
        else "GIL likely HELD during write"
    )


if __name__ == "__main__":
    main()
