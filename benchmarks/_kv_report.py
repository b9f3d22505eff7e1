"""Statistics, tables and target checks for kv_bench.py.

Owns: turning merged latency samples into percentiles, the per-system detail
table, the target-vs-etcd comparison table, the PASS/FAIL evaluation of the
issue's targets, and the JSON document. Pure functions over `CellResult`s.

Must never: run load or talk to a server, or report a target as PASS when a
cell it needs was not measured or had errors (that is "n/a" / FAIL).

Percentiles use the nearest-rank method on all samples (no histogram
bucketing), so p99 of a 5 s cell is an exact order statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from _kv_runner import CellResult

# The issue's targets (2-core machine, all three nodes local).
PUT_RATIO_MIN = 0.5  # put ops/s at 64 clients >= 0.5 x etcd
GET_RATIO_MIN = 0.5  # serializable get ops/s >= 0.5 x etcd
PUT_P99_1CLIENT_MAX_MS = 10.0  # p99 put latency at 1 client < 10 ms
TARGET_CLIENTS = 64


def percentile(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of an ascending list; nan if empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    >>> percentile(list(range(1, 101)), 99), percentile([7.0], 0)
    (99, 7.0)
    """
    if not sorted_vals:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_vals)))
    return sorted_vals[min(rank, len(sorted_vals)) - 1]


@dataclass
class Summary:
    workload: str
    clients: int
    procs: int
    ops: int
    ops_per_sec: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    first_error: str
    gen_cpu: float
    server_cpu: float | None
    machine_busy: float

    @property
    def gen_us_per_op(self) -> float | None:
        return self.gen_cpu / self.ops_per_sec * 1e6 if self.ops_per_sec > 0 else None

    @property
    def server_us_per_op(self) -> float | None:
        if self.server_cpu is None or self.ops_per_sec <= 0:
            return None
        return self.server_cpu / self.ops_per_sec * 1e6

    @property
    def other_cpu(self) -> float | None:
        """Cores used by neither the generator nor the measured servers (noise)."""
        if self.server_cpu is None:
            return None
        return max(0.0, self.machine_busy - self.gen_cpu - self.server_cpu)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["server_cpu_us_per_op"] = self.server_us_per_op
        d["gen_cpu_us_per_op"] = self.gen_us_per_op
        d["other_cpu"] = self.other_cpu
        return d


def summarize(r: CellResult) -> Summary:
    vals = sorted(r.latencies)
    ms = [v * 1e3 for v in (percentile(vals, 50), percentile(vals, 99), percentile(vals, 99.9))]
    return Summary(
        workload=r.workload,
        clients=r.clients,
        procs=r.procs,
        ops=r.ops,
        ops_per_sec=r.ops_per_sec,
        p50_ms=ms[0],
        p99_ms=ms[1],
        p999_ms=ms[2],
        max_ms=vals[-1] * 1e3 if vals else math.nan,
        mean_ms=sum(vals) / len(vals) * 1e3 if vals else math.nan,
        errors=r.errors,
        first_error=r.first_error,
        gen_cpu=r.gen_cpu,
        server_cpu=r.server_cpu,
        machine_busy=r.machine_busy,
    )


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def detail_table(name: str, rows: list[Summary]) -> str:
    head = (
        f"{'workload':<17} {'clients':>7} {'procs':>5} {'ops/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8} {'errors':>6} "
        f"{'gen cpu':>7} {'gen us/op':>9} {'srv cpu':>7} {'srv us/op':>9} {'busy':>5} {'other':>5}"
    )
    lines = [f"== {name}", head, "-" * len(head)]
    for s in rows:
        lines.append(
            f"{s.workload:<17} {s.clients:>7} {s.procs:>5} {s.ops_per_sec:>9.0f} "
            f"{_f(s.p50_ms, '.2f'):>8} {_f(s.p99_ms, '.2f'):>8} {_f(s.p999_ms, '.2f'):>9} "
            f"{_f(s.max_ms, '.1f'):>8} {sum(s.errors.values()):>6} {s.gen_cpu:>7.2f} "
            f"{_f(s.gen_us_per_op, '.0f'):>9} "
            f"{_f(s.server_cpu, '.2f'):>7} {_f(s.server_us_per_op, '.0f'):>9} "
            f"{s.machine_busy:>5.2f} {_f(s.other_cpu, '.2f'):>5}"
        )
        if s.first_error:
            lines.append(f"    first error: {s.first_error}")
    lines.append(
        "(cpu/busy in cores: 1.00 = one core busy for the whole cell; us/op = CPU microseconds"
        " per completed op; srv = all server processes together; busy = whole machine;"
        " other = busy - gen - srv: anything else running, e.g. the idle other cluster)"
    )
    return "\n".join(lines)


def compare_table(target: list[Summary], etcd: list[Summary], name: str = "target") -> str:
    by_key = {(s.workload, s.clients): s for s in etcd}
    head = (
        f"{'workload':<17} {'clients':>7} | {name + ' ops/s':>12} {'p50':>7} {'p99':>7} | "
        f"{'etcd ops/s':>10} {'p50':>7} {'p99':>7} | {'ops ratio':>9} {'p99 ratio':>9}"
    )
    title = f"== {name} vs etcd (latencies in ms; ops ratio = {name}/etcd)"
    lines = [title, head, "-" * len(head)]
    for t in target:
        e = by_key.get((t.workload, t.clients))
        if e is None:
            continue
        ratio = t.ops_per_sec / e.ops_per_sec if e.ops_per_sec > 0 else math.nan
        p99r = t.p99_ms / e.p99_ms if e.p99_ms and e.p99_ms > 0 else math.nan
        lines.append(
            f"{t.workload:<17} {t.clients:>7} | {t.ops_per_sec:>12.0f} {_f(t.p50_ms, '.2f'):>7} "
            f"{_f(t.p99_ms, '.2f'):>7} | {e.ops_per_sec:>10.0f} {_f(e.p50_ms, '.2f'):>7} "
            f"{_f(e.p99_ms, '.2f'):>7} | {_f(ratio, '.2f'):>9} {_f(p99r, '.2f'):>9}"
        )
    return "\n".join(lines)


NOISE_CORES = 0.25  # average foreign load above which ratios are not trustworthy


def noise_warning(rows: list[Summary]) -> str:
    """A warning when other processes used notable CPU during the cells, else ""."""
    others = [s.other_cpu for s in rows if s.other_cpu is not None]
    if not others:
        return ""
    avg, worst = sum(others) / len(others), max(others)
    if avg < NOISE_CORES:
        return ""
    return (
        f"WARNING: other processes used {avg:.2f} cores on average (worst cell {worst:.2f}) "
        "while measuring; the machine was shared, so figures and ratios are noisy. "
        "Rerun on a quiet machine; --repeat 3 steadies the ratios, not the absolute figures."
    )


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | n/a
    detail: str


def _find(rows: list[Summary], workload: str, clients: int | None) -> Summary | None:
    cands = [s for s in rows if s.workload == workload]
    if clients is not None:
        cands = [s for s in cands if s.clients == clients]
    return max(cands, key=lambda s: s.clients) if cands else None


def _ratio_check(
    name: str, target: list[Summary], etcd: list[Summary] | None, workload: str, minimum: float
) -> Check:
    t = _find(target, workload, TARGET_CLIENTS)
    if etcd is None:
        return Check(name, "n/a", "needs --compare-etcd")
    e = _find(etcd, workload, TARGET_CLIENTS)
    if t is None or e is None:
        return Check(name, "n/a", f"{workload} at {TARGET_CLIENTS} clients not run")
    if sum(t.errors.values()) or sum(e.errors.values()):
        return Check(name, "FAIL", f"errors: target {t.errors}, etcd {e.errors}")
    ratio = t.ops_per_sec / e.ops_per_sec if e.ops_per_sec > 0 else 0.0
    ok = ratio >= minimum
    return Check(
        name,
        "PASS" if ok else "FAIL",
        f"{t.ops_per_sec:.0f} vs {e.ops_per_sec:.0f} ops/s = {ratio:.2f} (need >= {minimum})",
    )


def evaluate_targets(target: list[Summary], etcd: list[Summary] | None) -> list[Check]:
    checks = [
        _ratio_check(
            f"put throughput at {TARGET_CLIENTS} clients >= {PUT_RATIO_MIN} x etcd",
            target, etcd, "put", PUT_RATIO_MIN,
        ),
        _ratio_check(
            f"serializable get throughput at {TARGET_CLIENTS} clients >= {GET_RATIO_MIN} x etcd",
            target, etcd, "get-serializable", GET_RATIO_MIN,
        ),
    ]  # fmt: skip
    name = f"put p99 latency at 1 client < {PUT_P99_1CLIENT_MAX_MS:g} ms"
    t = _find(target, "put", 1)
    if t is None:
        checks.append(Check(name, "n/a", "put at 1 client not run"))
    elif sum(t.errors.values()) or math.isnan(t.p99_ms):
        checks.append(Check(name, "FAIL", f"errors: {t.errors}"))
    else:
        ok = t.p99_ms < PUT_P99_1CLIENT_MAX_MS
        checks.append(Check(name, "PASS" if ok else "FAIL", f"p99 = {t.p99_ms:.2f} ms"))
    return checks


def checks_table(checks: list[Check]) -> str:
    lines = ["== targets"]
    for c in checks:
        lines.append(f"[{c.status:>4}] {c.name}: {c.detail}")
    return "\n".join(lines)
