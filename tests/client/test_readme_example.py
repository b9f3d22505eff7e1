"""The README's dynamic-configuration example is a working application: run
it as written against a real cluster (etcd and kvstore) and drive it with
kvctl config load, single puts, an invalid value and a multi-key txn."""

from __future__ import annotations

import ast
import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

from kvstore.cli.kvctl import run as kvctl_run
from kvstore.client import Op

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- example: reload.py"


def readme_example() -> str:
    text = README.read_text()
    after = text[text.index(MARKER) :]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "no python block after the example marker"
    return match.group(1)


class _Lines:
    """stdout of a child, line by line, with a timeout per line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self._q: queue.Queue[str] = queue.Queue()
        self._proc = proc
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put("")

    def next(self, timeout: float = 30.0) -> str:
        try:
            line = self._q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the example printed nothing in time") from None
        assert line, f"the example exited: {self._proc.stderr.read()}"  # type: ignore[union-attr]
        return line


def _applied(line: str) -> tuple[int, dict]:
    m = re.fullmatch(r"applied revision (\d+): (.*)", line)
    assert m, line
    return int(m.group(1)), ast.literal_eval(m.group(2))


def test_readme_example_reloads_on_change(cluster, client, ns, tmp_path):
    prefix = ns + "app"
    script = tmp_path / "reload.py"
    script.write_text(readme_example())
    runner = CliRunner()
    with runner.isolation(input="db: {host: db1, port: 5432}\nworkers: 4\n") as (out, err, _):
        code = kvctl_run(
            ["--endpoints", ",".join(cluster.endpoints), "config", "load", "-", "--prefix", prefix]
        )
    assert code == 0, err.getvalue()
    env = {
        **os.environ,
        "KVSTORE_ENDPOINTS": ",".join(cluster.endpoints),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script), prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = _Lines(proc)
        rev, config = _applied(lines.next())
        assert config == {"db": {"host": "db1", "port": 5432}, "workers": 4}
        assert rev == client.get(prefix + "/workers").header.revision

        r = client.put(prefix + "/workers", "8")
        assert _applied(lines.next()) == (
            r.header.revision,
            {"db": {"host": "db1", "port": 5432}, "workers": 8},
        )

        bad = client.put(prefix + "/db/port", "x")
        assert lines.next() == (
            f"kept the previous config: configuration at revision {bad.header.revision} "
            "rejected: $.db.port: 'x' is not of type 'integer'"
        )

        t = (
            client.txn()
            .then(Op.put(prefix + "/db/host", "db2"), Op.put(prefix + "/db/port", "6432"))
            .commit()
        )
        assert _applied(lines.next()) == (
            t.revision,
            {"db": {"host": "db2", "port": 6432}, "workers": 8},
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
