"""The hub's progress timer (etcd --experimental-watch-progress-notify-interval)
and the flag's Go-duration parsing in the `kvstore` command."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kvstore.cli.server_cmd import build_config, parse_duration
from kvstore.server.config import ConfigError
from tests.watch.conftest import Applied


def test_timer_sends_progress_to_idle_progress_notify_watchers(tmp_path: Path) -> None:
    applied = Applied(tmp_path / "db", progress_interval_s=0.02)  # type: ignore[arg-type]
    applied.put(b"x")

    async def scenario() -> None:
        hub = applied.hub
        hub.start()
        try:
            stream, wid = applied.watch(key=b"a", progress_notify=True)
            applied.watch(stream, key=b"b")
            assert (await stream.next()).created and (await stream.next()).created
            for _ in range(3):
                resp = await asyncio.wait_for(stream.next(), 10)
                assert resp.watch_id == wid and not resp.events and not resp.created
                assert resp.header.revision == hub.current_revision == 2  # the put
        finally:
            await hub.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        applied.backend.close()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600.0), ("200ms", 0.2), ("1m30s", 90.0), ("1.5h", 5400.0), ("250us", 250e-6)],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "--flag") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "10x", "m", "1m 2s"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="--flag: invalid duration"):
        parse_duration(text, "--flag")


def test_flag_reaches_the_config_and_must_be_positive() -> None:
    from click.testing import CliRunner

    from kvstore.cli.server_cmd import _command

    seen: dict[str, object] = {}

    def capture(kw: dict[str, object]) -> object:
        seen.update(kw)
        raise SystemExit(0)

    runner = CliRunner()
    import kvstore.cli.server_cmd as cmd

    original = cmd.build_config
    cmd.build_config = capture  # type: ignore[assignment]
    try:
        result = runner.invoke(
            _command, env={"KVSTORE_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL": "250ms"}
        )
    finally:
        cmd.build_config = original  # type: ignore[assignment]
    assert result.exit_code == 0, result.output
    assert seen["experimental_watch_progress_notify_interval"] == "250ms"
    cfg = build_config({**seen, "data_dir": "/tmp/unused"})
    assert cfg.watch_progress_notify_interval_s == pytest.approx(0.25)
    with pytest.raises(SystemExit):
        build_config({**seen, "experimental_watch_progress_notify_interval": "0"})
