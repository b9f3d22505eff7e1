"""MvccStore against a naive in-memory reference model (Hypothesis stateful test).

The model keeps the full history of every key as a list and answers reads by
scanning it; it never deletes anything, so after a compaction the store must
still give the same answers for every revision >= the compaction point, and
COMPACTED below it. Random puts, deletes, txns, compactions, ranges at random
revisions and store reopenings (index rebuilt from RocksDB).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kvstore import errors
from kvstore.mvcc import MvccStore
from kvstore.pb import rpc_pb2
from kvstore.storage.backend import Backend

R = rpc_pb2
C = R.Compare

KEYS = [b"a", b"ab", b"b", b"c", b"\xff"]
keys = st.sampled_from(KEYS)
values = st.sampled_from([b"", b"x", b"y", b"zz"])
# range_end choices: single key, prefix-ish ends, from-key.
ends = st.sampled_from([b"", b"b", b"c", b"\xff", b"\x00"])


@dataclass
class ModelKV:
    key: bytes
    value: bytes
    create: int
    mod: int
    version: int


@dataclass
class Model:
    current: int = 1
    compact: int = -1
    history: dict[bytes, list[tuple[int, ModelKV | None]]] = field(default_factory=dict)

    def get(self, key: bytes, at: int) -> ModelKV | None:
        found = None
        for rev, kv in self.history.get(key, []):
            if rev > at:
                break
            found = kv
        return found

    def keys_in(self, key: bytes, end: bytes) -> list[bytes]:
        if not end:
            return [key]
        return sorted(k for k in self.history if k >= key and (end == b"\x00" or k < end))

    def live(self, key: bytes, end: bytes, at: int) -> list[ModelKV]:
        out = []
        for k in self.keys_in(key, end):
            kv = self.get(k, at)
            if kv is not None:
                out.append(kv)
        return out

    def put(self, rev: int, key: bytes, value: bytes, at: int) -> None:
        old = self.get(key, at)
        kv = ModelKV(key, value, old.create if old else rev, rev, old.version + 1 if old else 1)
        self.history.setdefault(key, []).append((rev, kv))

    def delete(self, rev: int, key: bytes, end: bytes, at: int) -> int:
        gone = self.live(key, end, at)
        for kv in gone:
            self.history[kv.key].append((rev, None))
        return len(gone)


def as_tuple(kv) -> tuple:
    return (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)


def model_tuple(kv: ModelKV) -> tuple:
    return (kv.key, kv.value, kv.create, kv.mod, kv.version)


class StoreVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="mvcc-model-")
        self.backend = Backend.open(f"{self.dir}/db")
        self.store = MvccStore(self.backend)
        self.model = Model()

    def teardown(self) -> None:
        self.backend.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _apply(self, fn):
        batch = self.store.begin_batch()
        try:
            return fn(batch)
        finally:
            batch.commit()

    @rule(key=keys, value=values)
    def put(self, key: bytes, value: bytes) -> None:
        resp = self._apply(lambda b: b.put(R.PutRequest(key=key, value=value, prev_kv=True)))
        m = self.model
        old = m.get(key, m.current)
        m.current += 1
        m.put(m.current, key, value, m.current - 1)
        assert resp.header.revision == m.current
        assert (as_tuple(resp.prev_kv) if resp.HasField("prev_kv") else None) == (
            model_tuple(old) if old else None
        )

    @rule(key=keys, end=ends)
    def delete(self, key: bytes, end: bytes) -> None:
        resp = self._apply(lambda b: b.delete_range(R.DeleteRangeRequest(key=key, range_end=end)))
        m = self.model
        n = m.delete(m.current + 1, key, end, m.current)
        if n:
            m.current += 1
        assert resp.deleted == n
        assert resp.header.revision == m.current

    @rule(
        ckey=keys,
        ctarget=st.sampled_from([C.VERSION, C.CREATE, C.MOD, C.VALUE]),
        result=st.sampled_from([C.EQUAL, C.GREATER, C.LESS, C.NOT_EQUAL]),
        number=st.integers(0, 6),
        value=values,
        ops=st.lists(st.tuples(st.sampled_from(["put", "del", "get"]), keys, values),
                     max_size=4),
    )
    def txn(self, ckey, ctarget, result, number, value, ops) -> None:
        target = ctarget
        written = [k for kind, k, _ in ops if kind != "get"]
        if len(set(written)) != len(written):
            return  # duplicate writes are rejected by the api layer
        c = C(key=ckey, target=target, result=result)
        if target == C.VALUE:
            c.value = value
        else:
            setattr(c, {C.VERSION: "version", C.CREATE: "create_revision",
                        C.MOD: "mod_revision"}[target], number)
        req_ops = []
        for kind, k, v in ops:
            if kind == "put":
                req_ops.append(R.RequestOp(request_put=R.PutRequest(key=k, value=v)))
            elif kind == "del":
                req_ops.append(R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=k)))
            else:
                req_ops.append(R.RequestOp(request_range=R.RangeRequest(key=k)))
        req = R.TxnRequest(compare=[c], success=req_ops)
        resp = self._apply(lambda b: b.txn(req))
        m = self.model
        kv = m.get(ckey, m.current)
        if kv is None:
            ok = target != C.VALUE and _holds(result, 0, number)
        else:
            actual = {C.VERSION: kv.version, C.CREATE: kv.create, C.MOD: kv.mod,
                      C.VALUE: kv.value}[target]
            ok = _holds(result, actual, value if target == C.VALUE else number)
        assert resp.succeeded == ok
        if not ok:
            assert resp.header.revision == m.current
            return
        begin = m.current
        rev = begin + 1
        changed = False
        for (kind, k, v), r in zip(ops, resp.responses, strict=True):
            at = rev if changed else begin
            if kind == "put":
                m.put(rev, k, v, at)
                changed = True
            elif kind == "del":
                changed = m.delete(rev, k, b"", at) > 0 or changed
            else:
                want = m.get(k, at)
                got = r.response_range
                assert [as_tuple(x) for x in got.kvs] == ([model_tuple(want)] if want else [])
                assert got.header.revision == at
        if changed:
            m.current = rev
        assert resp.header.revision == m.current

    @rule(data=st.data())
    def compact(self, data) -> None:
        m = self.model
        rev = data.draw(st.integers(max(m.compact - 1, 0), m.current + 1))
        try:
            self._apply(lambda b: b.compact(rev))
        except errors.EtcdError as exc:
            expected = errors.COMPACTED() if rev <= m.compact else errors.FUTURE_REVISION()
            assert rev <= m.compact or rev > m.current
            assert exc == expected
            return
        assert m.compact < rev <= m.current
        m.compact = rev

    @rule(key=keys, end=ends, data=st.data(),
          limit=st.integers(0, 3), count_only=st.booleans(), keys_only=st.booleans())
    def range(self, key, end, data, limit, count_only, keys_only) -> None:
        m = self.model
        rev = data.draw(st.integers(0, m.current + 1))
        req = R.RangeRequest(key=key, range_end=end, revision=rev, limit=limit,
                             count_only=count_only, keys_only=keys_only)
        try:
            resp = self.store.range(req)
        except errors.EtcdError as exc:
            if rev > m.current:
                assert exc == errors.FUTURE_REVISION()
            else:
                assert 0 < rev < m.compact and exc == errors.COMPACTED()
            return
        at = rev if rev > 0 else m.current
        assert at <= m.current and (rev <= 0 or rev >= m.compact)
        live = m.live(key, end, at)
        assert resp.count == len(live)
        assert resp.header.revision == m.current
        if count_only:
            assert not resp.kvs
            return
        want = live[:limit] if limit else live
        got = [as_tuple(kv) for kv in resp.kvs]
        expected = [model_tuple(kv) for kv in want]
        if keys_only:
            expected = [(k, b"", c, mo, v) for k, _, c, mo, v in expected]
        assert got == expected
        assert resp.more == (bool(limit) and len(live) > limit)

    @rule()
    def reopen(self) -> None:
        self.backend.close()
        self.backend = Backend.open(f"{self.dir}/db")
        self.store = MvccStore(self.backend)

    @invariant()
    def revisions_agree(self) -> None:
        assert self.store.current_revision == self.model.current
        assert self.store.compact_revision == self.model.compact


def _holds(result: int, actual, expected) -> bool:
    return {
        C.EQUAL: actual == expected,
        C.NOT_EQUAL: actual != expected,
        C.GREATER: actual > expected,
        C.LESS: actual < expected,
    }[result]


# KVSTORE_MVCC_MODEL_EXAMPLES raises the budget for a longer soak run.
StoreVersusModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("KVSTORE_MVCC_MODEL_EXAMPLES", "25")),
    stateful_step_count=30,
    deadline=None,
)
test_store_versus_model = StoreVersusModel.TestCase
