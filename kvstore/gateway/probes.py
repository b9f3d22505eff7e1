"""Health probes: /version, /health, /livez, /readyz (and /metrics).

Owns: the answers, computed from the node's state at request time.
- `/version`: `{"etcdserver": …, "etcdcluster": …}` as etcd.
- `/health`: etcd 3.4's body (`{"health":"true"}` 200 / `{"health":"false"}`
  503) with etcd 3.5's rules: unhealthy on any active alarm not listed in
  `?exclude=` (e.g. `?exclude=NOSPACE`), without a leader (skipped with
  `?serializable=true`), or when a read does not complete within 1 s (a
  linearizable read; a local serializable one with `?serializable=true`).
- `/livez`, `/readyz`: etcd 3.5's check registries. livez: `serializable_read`;
  readyz: `data_corruption` (CORRUPT alarm), `serializable_read`,
  `linearizable_read`, `non_learner`, plus `nospace_alarm` (the issue asks
  /readyz to fail while NOSPACE is raised; etcd 3.5 has no such check —
  `?exclude=nospace_alarm` gives etcd's exact set). `?verbose` lists each
  check (`[+]name ok`), `?exclude=a&exclude=b` skips checks, and
  `/readyz/<check>` runs one check. Failure: 503 with the per-check lines.
- `/metrics`: delegated to the existing `server.http.MetricsServer` renderer.
Never: touches the Raft core, proposes anything, or blocks the loop; every
read it makes is bounded by PROBE_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kvstore.server.kv_server import CLUSTER_VERSION, SERVER_VERSION
from kvstore.server.metrics import NodeMetrics

PROBE_TIMEOUT_S = 1.0  # etcd's /health read deadline
_ALARM_NOSPACE = 1
_ALARM_CORRUPT = 2
_ALARM_NAMES = {_ALARM_NOSPACE: "NOSPACE", _ALARM_CORRUPT: "CORRUPT"}

Check = Callable[[], Awaitable[None]]


class ProbeFailed(Exception):
    """A check's failure; the message is what /readyz?verbose prints."""


class Probes:
    """Answers the probe paths for one node (`node.kv` is its KvServer facade,
    None until started)."""

    def __init__(self, node: Any) -> None:
        from kvstore.server.http import MetricsServer

        self._node = node
        # The node's own registry (its RPC counters included); the renderer is
        # not started: used only for its /metrics rendering.
        self._metrics: NodeMetrics = node.metrics
        self._metrics_renderer = MetricsServer(node, self._metrics)
        self.livez: dict[str, Check] = {"serializable_read": self._serializable_read}
        self.readyz: dict[str, Check] = {
            "data_corruption": self._no_corrupt_alarm,
            "serializable_read": self._serializable_read,
            "linearizable_read": self._linearizable_read,
            "non_learner": self._non_learner,
            "nospace_alarm": self._no_nospace_alarm,
        }

    @property
    def paths(self) -> tuple[str, ...]:
        return ("/version", "/health", "/metrics", "/livez", "/readyz")

    def handles(self, path: str) -> bool:
        return path in self.paths or path.startswith(("/livez/", "/readyz/"))

    async def respond(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """(status, content type, body) for GET `path` with its parsed query."""
        if path == "/version":
            body = f'{{"etcdserver":"{SERVER_VERSION}","etcdcluster":"{CLUSTER_VERSION}"}}'
            return 200, "application/json", body.encode()
        if path == "/health":
            healthy = await self.health(
                serializable=_flag(query, "serializable"), exclude=_excludes(query)
            )
            self._count(healthy)
            answer = b'{"health":"true"}' if healthy else b'{"health":"false"}'
            return (200 if healthy else 503), "application/json", answer
        if path == "/metrics":
            return await self._metrics_renderer.respond("/metrics")
        for root, checks in (("/livez", self.livez), ("/readyz", self.readyz)):
            if path == root:
                excluded = _excludes(query)
                return await self._run(
                    [n for n in checks if n not in excluded], checks, _flag(query, "verbose")
                )
            if path.startswith(root + "/") and path[len(root) + 1 :] in checks:
                return await self._run([path[len(root) + 1 :]], checks, _flag(query, "verbose"))
        return 404, "text/plain; charset=utf-8", b"404 page not found\n"

    # ----------------------------------------------------------------- /health
    async def health(self, *, serializable: bool, exclude: set[str]) -> bool:
        kv = self._kv()
        if kv is None:
            return False
        for _member, alarm in self._alarms():
            if _ALARM_NAMES.get(alarm, "UNKNOWN") not in exclude:
                return False
        if not serializable and not kv.has_leader:
            return False
        try:
            await self._read(serializable)
        except ProbeFailed:
            return False
        return True

    def _count(self, healthy: bool) -> None:
        (self._metrics.health_success if healthy else self._metrics.health_failures).inc()

    # ----------------------------------------------------------------- checks
    async def _run(
        self, names: list[str], checks: dict[str, Check], verbose: bool
    ) -> tuple[int, str, bytes]:
        lines: list[str] = []
        healthy = True
        for name in names:
            try:
                await checks[name]()
            except ProbeFailed as exc:
                healthy = False
                lines.append(f"[-]{name} failed: {exc}\n")
            else:
                lines.append(f"[+]{name} ok\n")
        self._count(healthy)
        report = "".join(lines)
        if not healthy:
            # Go's http.Error(w, reason, 503): the reason plus a newline.
            return 503, "text/plain; charset=utf-8", (report + "\n").encode()
        return 200, "text/plain; charset=utf-8", ((report if verbose else "") + "ok\n").encode()

    async def _serializable_read(self) -> None:
        await self._read(serializable=True)

    async def _linearizable_read(self) -> None:
        await self._read(serializable=False)

    async def _no_corrupt_alarm(self) -> None:
        if any(alarm == _ALARM_CORRUPT for _m, alarm in self._alarms()):
            raise ProbeFailed("alarm activated: CORRUPT")

    async def _no_nospace_alarm(self) -> None:
        if any(alarm == _ALARM_NOSPACE for _m, alarm in self._alarms()):
            raise ProbeFailed("alarm activated: NOSPACE")

    async def _non_learner(self) -> None:
        kv = self._kv()
        if kv is None:
            raise ProbeFailed("member not started")
        if kv.status().isLearner:
            raise ProbeFailed("not supported for learner")

    async def _read(self, serializable: bool) -> None:
        """etcd's readCheck: Range{keys_only, limit 1} within the deadline."""
        from kvstore import errors
        from kvstore.pb import rpc_pb2

        kv = self._kv()
        if kv is None:
            raise ProbeFailed("member not started")
        req = rpc_pb2.RangeRequest(
            key=b"health", keys_only=True, limit=1, serializable=serializable
        )
        try:
            await asyncio.wait_for(kv.range(req), PROBE_TIMEOUT_S)
        except TimeoutError:
            raise ProbeFailed("context deadline exceeded") from None
        except errors.EtcdError as exc:
            raise ProbeFailed(exc.message) from None
        except Exception as exc:  # noqa: BLE001 - stopped, no leader...: not ready
            raise ProbeFailed(type(exc).__name__) from None

    def _alarms(self) -> list[tuple[int, int]]:
        kv = self._kv()
        maintenance = getattr(kv, "maintenance", None)
        alarms = getattr(maintenance, "alarms", None)
        if alarms is None:
            return []
        return [(int(m), int(a)) for m, a in alarms.active()]

    def _kv(self) -> Any:
        return getattr(self._node, "kv", None)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    """Present (`?verbose`) or true (`?serializable=true`)."""
    values = query.get(name)
    if values is None:
        return False
    return any(v.lower() in ("", "true", "1") for v in values)


def _excludes(query: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for value in query.get("exclude", []):
        out.update(v for v in value.split(",") if v)
    return out
