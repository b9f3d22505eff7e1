"""Live configuration: a read-only mapping of the keys under a prefix, kept current.

Owns: `ConfigView` (asyncio), `SyncConfigView` (its blocking face for
`Client`), the immutable `ConfigSnapshot`s they publish, and the loop that
keeps them current: one Range of the prefix, then one Watch from the next
revision (the `Watcher` resumes it on another member after a failure).

Invariants:
  * every published snapshot is the state of the prefix at ONE store
    revision: the events of a revision (one transaction) are applied together,
    because a watch response carries whole revisions (etcd and kvstore never
    split one unless the watcher asks for fragments);
  * the store state (`_raw`) always follows the store; the published snapshot
    follows it only while the tree decodes and passes the schema. A rejected
    revision is reported (`on_error`, a warning in the log, `rejections`) and
    the previous good snapshot stays; the next good revision is applied on
    top of the real store state, never on top of the rejected one;
  * after a compaction (or a watch that could not be resumed) the view
    re-reads the prefix with a linearizable Range (whose revision is >= every
    revision already seen), publishes the difference as one update, and
    watches on from there: no change is missed and none is applied twice.

Must never: write to the store, block the event loop (callbacks that need to
block run in the SyncConfigView's callback thread), or publish a snapshot that
mixes two revisions.

Example::

    async with AsyncClient() as client:
        view = await client.config_view("/config/app", schema=SCHEMA,
                                        on_change=lambda old, new, rev: reload(new))
        port = view["db/port"]            # keys are relative to the prefix
        tree = view.snapshot.tree()       # {"db": {"port": 5432, ...}}
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from kvstore.client.configtree import Decoder, build_tree, decoder_for
from kvstore.client.errors import ClientClosedError, ClientError, CompactedError
from kvstore.client.types import Event, EventType

if TYPE_CHECKING:
    from jsonschema.protocols import Validator  # type: ignore[import-untyped]

    from kvstore.client.aio import AsyncClient
    from kvstore.client.sync import _LoopThread
    from kvstore.client.watch import Watcher

log = logging.getLogger(__name__)

_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0


class ConfigSnapshot(Mapping[str, Any]):
    """The decoded keys under the prefix at one `revision` (immutable mapping).

    Keys are relative to the prefix ("db/port" for /config/app/db/port).
    `tree()` returns the nested document (what the schema checks)."""

    __slots__ = ("_items", "_tree", "revision")

    def __init__(self, revision: int, items: dict[str, Any], tree: dict[str, Any]) -> None:
        self.revision = revision
        self._items = items
        self._tree = tree

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def tree(self) -> dict[str, Any]:
        """The nested document (a fresh copy: changing it changes nothing)."""
        return copy.deepcopy(self._tree)

    def __repr__(self) -> str:
        return f"ConfigSnapshot(revision={self.revision}, {dict(self._items)!r})"


@dataclass(frozen=True, slots=True)
class ConfigRejection:
    """A store revision the view did not apply: values that do not decode or a
    tree that fails the schema. `errors` holds one line per problem."""

    revision: int
    errors: tuple[str, ...]

    def __str__(self) -> str:
        return f"configuration at revision {self.revision} rejected: " + "; ".join(self.errors)


class ConfigValidationError(ClientError):
    """The configuration under the prefix is invalid when the view starts."""

    def __init__(self, rejection: ConfigRejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


OnChange = Callable[[ConfigSnapshot, ConfigSnapshot, int], Any]
OnError = Callable[[ConfigRejection], Any]
Schema = Mapping[str, Any] | str | os.PathLike[str]


def load_schema(schema: Schema) -> Validator:
    """A validator for `schema` (a mapping, or the path of a JSON/YAML file).

    The draft follows the schema's "$schema" (default: the newest draft).
    Raises ValueError for an unreadable or invalid schema."""
    if not isinstance(schema, Mapping):
        path = os.fspath(schema)
        try:
            with open(path, encoding="utf-8") as f:
                schema = yaml.safe_load(f)  # YAML is a superset of JSON
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read schema {path}: {exc}") from None
        if not isinstance(schema, Mapping):
            raise ValueError("a JSON Schema must be a mapping at the top")
    # Imported here: jsonschema costs ~0.1 s at import, only views with a schema pay it.
    import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock

    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"invalid JSON Schema: {exc.message}") from None
    return cls(schema)


def schema_errors(validator: Validator | None, tree: Any) -> list[str]:
    """One line per schema violation, "path: message", in path order."""
    if validator is None:
        return []
    errors = sorted(validator.iter_errors(tree), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors]


def _json_path(path: Any) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return "$" + parts


class _Invalid:
    """Placeholder for a stored value that does not decode."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class ConfigView(Mapping[str, Any]):
    """Live, read-only mapping of the keys under `prefix` (asyncio).

    Create with `await client.config_view(prefix, ...)` (already started) or
    `async with ConfigView(client, prefix, ...)`. Reading it reads the current
    snapshot; take `view.snapshot` once to read several keys at ONE revision.

    `prefix` is a directory: "/config/app" and "/config/app/" both mean the
    keys starting with "/config/app/". `decode`: "yaml" (default: the kvctl
    config format, numbers and booleans typed), "json" (each value one JSON
    document), "raw" (text) or a callable bytes -> value. `schema`: a JSON
    Schema (mapping or file path) the nested tree must satisfy.
    `on_change(old, new, revision)` runs after each applied update, not for
    the first snapshot (sync or async; an exception is logged, never stops the
    view). `on_error(rejection)`
    runs for each rejected revision.

    Raises ConfigValidationError from `start()` when the tree is invalid at
    start (there is no previous good view to keep)."""

    def __init__(
        self,
        client: AsyncClient,
        prefix: str | bytes,
        *,
        schema: Schema | None = None,
        decode: str | Decoder = "yaml",
        on_change: OnChange | None = None,
        on_error: OnError | None = None,
        reconnect_timeout: float = 60.0,
    ) -> None:
        text = prefix.decode() if isinstance(prefix, bytes) else prefix
        self.prefix = text.rstrip("/") + "/"
        self._prefix_b = self.prefix.encode()
        self._client = client
        self._decode = decoder_for(decode)
        self._validator = load_schema(schema) if schema is not None else None
        self._on_change = on_change
        self._on_error = on_error
        self._reconnect_timeout = reconnect_timeout
        # The store as last seen (follows every revision, good or not).
        self._raw: dict[str, bytes] = {}
        self._decoded: dict[str, Any] = {}
        self._raw_revision = 0
        self._processed_revision = 0  # raw revision whose callbacks have run
        self._snapshot = ConfigSnapshot(0, {}, {})
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._watcher: Watcher | None = None
        self._past_reconnects = 0  # of the watches this view replaced
        self._closed = False
        self.rejections = 0
        self.last_rejection: ConfigRejection | None = None
        self.resyncs = 0  # full re-reads after a compaction or a lost watch

    # --- the mapping (current snapshot) --------------------------------------

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The current good snapshot (immutable; one revision)."""
        return self._snapshot

    @property
    def revision(self) -> int:
        """Store revision of the current good snapshot."""
        return self._snapshot.revision

    @property
    def seen_revision(self) -> int:
        """Newest store revision processed (applied or rejected, callbacks run)."""
        return self._processed_revision

    @property
    def endpoint(self) -> str | None:
        """The member the watch is currently connected to (None between watches)."""
        return self._watcher.endpoint if self._watcher is not None else None

    @property
    def reconnects(self) -> int:
        """How often the view's watch was resumed on another member, over the
        view's life (a re-read after a compaction starts a new watch)."""
        current = self._watcher.reconnects if self._watcher is not None else 0
        return self._past_reconnects + current

    def __getitem__(self, key: str) -> Any:
        return self._snapshot[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot)

    def __len__(self) -> int:
        return len(self._snapshot)

    def tree(self) -> dict[str, Any]:
        return self._snapshot.tree()

    def __repr__(self) -> str:
        return f"<ConfigView {self.prefix!r} revision={self.revision} keys={len(self)}>"

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> ConfigView:
        """Read the prefix, publish the first snapshot, start following changes."""
        if self._task is None:
            await self._resync(initial=True)
            self._task = asyncio.get_running_loop().create_task(self._follow())
        return self

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> ConfigView:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_for_revision(self, revision: int, timeout: float | None = None) -> int:
        """Wait until the view has processed store revision `revision` (applied
        or rejected); returns `seen_revision`. TimeoutError after `timeout`."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: self._processed_revision >= revision)
        return self._processed_revision

    # --- following the store ---------------------------------------------------------

    async def _follow(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._closed:
            try:
                watcher = self._client.watch(
                    self._prefix_b,
                    prefix=True,
                    start_revision=self._raw_revision + 1,
                    reconnect_timeout=self._reconnect_timeout,
                )
                if self._watcher is not None:
                    self._past_reconnects += self._watcher.reconnects
                self._watcher = watcher
                async with watcher:
                    backoff = _BACKOFF_MIN_S
                    while True:
                        await self._apply_events(await watcher.next_batch())
            except CompactedError as err:
                log.info(
                    "config view %s: revision %d compacted (at %d); re-reading",
                    self.prefix,
                    self._raw_revision + 1,
                    err.compact_revision,
                )
            except ClientClosedError:
                return
            except (ClientError, StopAsyncIteration) as err:
                log.warning("config view %s: watch lost (%s); re-reading", self.prefix, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            except Exception:  # noqa: BLE001 - a bug must not silently freeze the view
                log.exception("config view %s: unexpected error; re-reading", self.prefix)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            await self._resync_until_done()

    async def _resync_until_done(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._closed:
            try:
                await self._resync(initial=False)
                return
            except ClientClosedError:
                self._closed = True
                return
            except ClientError as err:
                log.warning("config view %s: re-read failed (%s); retrying", self.prefix, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _resync(self, *, initial: bool) -> None:
        """Replace the store state by a fresh linearizable read of the prefix."""
        result = await self._client.get(self._prefix_b, prefix=True)
        if result.revision < self._raw_revision:
            # Cannot happen with a linearizable read; never go back in time.
            raise ClientError(f"read at revision {result.revision} is behind the view")
        fresh = {kv.key.decode("utf-8", "surrogateescape"): kv.value for kv in result.kvs}
        changes = {k: v for k, v in fresh.items() if self._raw.get(k) != v}
        deleted = [k for k in self._raw if k not in fresh]
        if not initial:
            self.resyncs += 1
        rejection = await self._apply_revision(result.revision, changes, deleted, initial=initial)
        if initial and rejection is not None:
            raise ConfigValidationError(rejection)

    async def _apply_events(self, events: list[Event]) -> None:
        """Apply a watch response: whole revisions, one update per revision."""
        i = 0
        while i < len(events):
            revision = events[i].revision
            changes: dict[str, bytes] = {}
            deleted: list[str] = []
            while i < len(events) and events[i].revision == revision:
                e = events[i]
                key = e.key.decode("utf-8", "surrogateescape")
                if e.type is EventType.PUT:
                    changes[key] = e.value
                    with contextlib.suppress(ValueError):
                        deleted.remove(key)
                else:
                    changes.pop(key, None)
                    deleted.append(key)
                i += 1
            if revision > self._raw_revision:  # never apply a revision twice
                await self._apply_revision(revision, changes, deleted, initial=False)

    async def _apply_revision(
        self, revision: int, changes: dict[str, bytes], deleted: list[str], *, initial: bool
    ) -> ConfigRejection | None:
        for key in deleted:
            self._raw.pop(key, None)
            self._decoded.pop(key, None)
        for key, value in changes.items():
            self._raw[key] = value
            self._decoded[key] = self._decode_value(key, value)
        self._raw_revision = revision
        rejection = None
        if changes or deleted or initial:
            rejection = await self._publish(revision, initial=initial)
        self._processed_revision = revision
        async with self._changed:
            self._changed.notify_all()
        return rejection

    def _decode_value(self, key: str, value: bytes) -> Any:
        try:
            return self._decode(value)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a rejected value
            return _Invalid(f"{key[len(self.prefix) :]}: cannot decode value: {exc}")

    async def _publish(self, revision: int, *, initial: bool) -> ConfigRejection | None:
        n = len(self.prefix)
        items = {key[n:]: value for key, value in sorted(self._decoded.items())}
        problems = [v.error for v in items.values() if isinstance(v, _Invalid)]
        tree: dict[str, Any] = {}
        if not problems:
            tree = build_tree(items)
            problems = schema_errors(self._validator, tree)
        if problems:
            rejection = ConfigRejection(revision, tuple(problems))
            self.rejections += 1
            self.last_rejection = rejection
            log.warning("config view %s: %s", self.prefix, rejection)
            await self._call(self._on_error, rejection)
            return rejection
        old, new = self._snapshot, ConfigSnapshot(revision, items, tree)
        self._snapshot = new
        if not initial:  # the caller gets the first snapshot from start() itself
            await self._call(self._on_change, old, new, revision)
        return None

    async def _call(self, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - an application bug must not stop the view
            log.exception("config view %s: callback %r failed", self.prefix, callback)


class SyncConfigView(Mapping[str, Any]):
    """Blocking face of a `ConfigView` for the sync `Client`.

    Reads never block (they read the current immutable snapshot). Callbacks
    run, in order, on one thread owned by this view (not the client's loop
    thread), so they may call the client. `close()` (or `with`) stops it."""

    def __init__(self, view: ConfigView, runner: _LoopThread, callbacks: _CallbackThread) -> None:
        self._view = view
        self._runner = runner
        self._callbacks = callbacks

    @property
    def snapshot(self) -> ConfigSnapshot:
        return self._view.snapshot

    @property
    def revision(self) -> int:
        return self._view.revision

    @property
    def seen_revision(self) -> int:
        return self._view.seen_revision

    @property
    def prefix(self) -> str:
        return self._view.prefix

    @property
    def rejections(self) -> int:
        return self._view.rejections

    @property
    def last_rejection(self) -> ConfigRejection | None:
        return self._view.last_rejection

    @property
    def resyncs(self) -> int:
        return self._view.resyncs

    @property
    def endpoint(self) -> str | None:
        return self._view.endpoint

    @property
    def reconnects(self) -> int:
        return self._view.reconnects

    def __getitem__(self, key: str) -> Any:
        return self._view.snapshot[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view.snapshot)

    def __len__(self) -> int:
        return len(self._view.snapshot)

    def tree(self) -> dict[str, Any]:
        return self._view.snapshot.tree()

    def wait_for_revision(self, revision: int, timeout: float | None = None) -> int:
        """Block until store revision `revision` was processed, and the
        callbacks queued until then have run."""
        seen = self._runner.run(self._view.wait_for_revision(revision, timeout))
        self._callbacks.drain(timeout)
        return seen

    def close(self) -> None:
        if not self._runner.loop.is_closed():
            self._runner.run(self._view.aclose())
        self._callbacks.stop()

    def __enter__(self) -> SyncConfigView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<blocking {self._view!r}>"


class _CallbackThread:
    """Runs queued callbacks in order on one daemon thread."""

    def __init__(self, name: str) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wrap(self, callback: Callable[..., Any] | None) -> Callable[..., None] | None:
        if callback is None:
            return None
        return lambda *args: self._queue.put((callback, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                callback, args = item
                try:
                    callback(*args)
                except Exception:  # noqa: BLE001 - an application bug must not stop the view
                    log.exception("config view callback %r failed", callback)
            finally:
                self._queue.task_done()

    def drain(self, timeout: float | None) -> None:
        """Wait until every callback queued so far has run."""
        done = threading.Event()
        self._queue.put((done.set, ()))
        if not done.wait(timeout):
            raise TimeoutError("config view callbacks still running")

    def stop(self) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._queue.put(None)
            self._thread.join(timeout=10)


def open_sync_view(
    runner: _LoopThread,
    make: Callable[[OnChange | None, OnError | None], Awaitable[ConfigView]],
    on_change: OnChange | None,
    on_error: OnError | None,
) -> SyncConfigView:
    """Start a ConfigView on `runner`'s loop with callbacks moved to their own thread."""
    callbacks = _CallbackThread("kvstore-config-callbacks")
    try:
        view = runner.run(make(callbacks.wrap(on_change), callbacks.wrap(on_error)))
    except BaseException:
        callbacks.stop()
        raise
    return SyncConfigView(view, runner, callbacks)


__all__ = [
    "ConfigRejection", "ConfigSnapshot", "ConfigValidationError", "ConfigView",
    "SyncConfigView", "load_schema", "schema_errors",
]  # fmt: skip
