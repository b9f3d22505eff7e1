"""Failpoints: the spec parser, the actions, and that a real server process
reaches its hooks only when KVSTORE_FAILPOINTS is set."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import timeit

import pytest

from kvstore import failpoints
from kvstore.devcluster import LocalCluster, child_env
from kvstore.failpoints import FailpointConfigError, FailpointError, Registry, parse, parse_term
from kvstore.testing.waiting import wait_until


def test_parse_terms() -> None:
    t = parse_term("sleep(200ms)")
    assert (t.action, t.arg, t.probability, t.count) == ("sleep", 0.2, 1.0, None)
    assert parse_term("sleep(1.5s)").arg == 1.5
    assert parse_term("sleep(300)").arg == 0.3
    t = parse_term("25%3*panic")
    assert (t.action, t.probability, t.count) == ("panic", 0.25, 3)
    assert parse_term("exit(7)").arg == 7
    assert parse_term("error").arg == "injected failure"
    assert parse_term("error(disk on fire)").arg == "disk on fire"


@pytest.mark.parametrize(
    "spec",
    [
        "raft_before_save",  # no action
        "no_such_point=panic",
        "raft_before_save=explode",
        "raft_before_save=sleep",
        "raft_before_save=sleep(soon)",
        "raft_before_save=panic(now)",
        "raft_before_save=150%panic",
    ],
)
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(FailpointConfigError):
        parse(spec)


def test_parse_several() -> None:
    terms = parse(" raft_before_save=panic ; apply_before_batch=sleep(200ms);")
    assert set(terms) == {"raft_before_save", "apply_before_batch"}


def test_count_limits_firings_and_drop_returns_true() -> None:
    reg = Registry(parse("peer_drop=2*drop"))
    assert [reg.hit("peer_drop") for _ in range(4)] == [True, True, False, False]
    assert reg.hits == {"peer_drop": 2}
    assert reg.hit("raft_before_save") is False  # not configured


def test_probability_is_seeded_and_roughly_right() -> None:
    a = Registry(parse("peer_drop=30%drop"), seed=5)
    b = Registry(parse("peer_drop=30%drop"), seed=5)
    fa = [a.hit("peer_drop") for _ in range(1000)]
    assert fa == [b.hit("peer_drop") for _ in range(1000)]
    assert 200 < sum(fa) < 400


def test_error_raises_an_oserror_and_sleep_sleeps() -> None:
    reg = Registry(parse("apply_before_batch=error(boom);raft_after_save=sleep(50ms)"))
    with pytest.raises(FailpointError, match="apply_before_batch: boom"):
        reg.hit("apply_before_batch")
    assert issubclass(FailpointError, OSError)
    start = time.monotonic()
    assert reg.hit("raft_after_save") is False
    assert time.monotonic() - start >= 0.05


def _python(code: str, spec: str | None) -> subprocess.CompletedProcess[str]:
    env = child_env()
    env.pop(failpoints.ENV, None)
    if spec is not None:
        env[failpoints.ENV] = spec
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_off_by_default_and_on_only_from_the_environment() -> None:
    code = "from kvstore import failpoints as fp; print(fp.ON, fp.hit('raft_before_save'))"
    assert _python(code, None).stdout.split() == ["False", "False"]
    assert _python(code, "").stdout.split() == ["False", "False"]
    out = _python(code, "raft_before_save=panic")
    assert out.returncode == 2
    assert "failpoint raft_before_save: panic" in out.stderr


def test_bad_environment_spec_stops_the_process_with_a_clear_message() -> None:
    out = _python("import kvstore.failpoints", "raft_before_sav=panic")
    assert out.returncode == 1
    assert "KVSTORE_FAILPOINTS: unknown failpoint 'raft_before_sav'" in out.stderr
    assert "Traceback" not in out.stderr


def test_off_hook_costs_about_as_much_as_nothing() -> None:
    """The guard is one attribute load and a truth test. Compared with a
    function call (a real no-op hook), it must be clearly cheaper; the
    absolute numbers are printed for the report (pytest -s)."""
    assert failpoints.ON is False or os.environ.get(failpoints.ENV)
    env = {"fp": failpoints}
    n = 200_000
    bare = min(timeit.repeat("pass", globals=env, number=n, repeat=5)) / n
    hook = min(timeit.repeat('fp.ON and fp.hit("x")', globals=env, number=n, repeat=5)) / n
    call = min(timeit.repeat("f()", setup="def f(): pass", number=n, repeat=5)) / n
    print(
        f"\nper hook: none {bare * 1e9:.1f} ns, guard {hook * 1e9:.1f} ns, call {call * 1e9:.1f} ns"
    )
    assert hook < call


@pytest.mark.e2e
def test_server_process_panics_at_raft_before_save(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member started with raft_before_save=panic dies at its first Raft
    write, before anything is persisted: the hook is on the real write path."""
    monkeypatch.setenv(failpoints.ENV, "raft_before_save=panic")
    cluster = LocalCluster(size=1, base_dir=tmp_path)
    try:
        cluster._spawn(0)  # noqa: SLF001 - started unhealthy on purpose
        proc = cluster.members[0].proc
        assert proc is not None
        wait_until(lambda: proc.poll() is not None, timeout=60, what="member exit")
        assert proc.returncode == 2
        text = cluster.members[0].log_path.read_text()
        assert "failpoints active" in text
        assert "failpoint raft_before_save: panic, ending the process" in text
    finally:
        cluster.stop()
