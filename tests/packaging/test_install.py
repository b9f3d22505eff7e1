"""kvstore installed the way a user installs it: a wheel into a fresh venv.

Owns: building the project's wheel from a copy of the sources, installing it with
the locked runtime dependencies (requirements/runtime.txt, hashes required) into a
new virtualenv, and running the installed `kvstore` and `kvctl` entry points for
real (a node serves a put and a get). A package-data file or a dependency that
the wheel or the lock misses fails here, not on a user's machine.
Never: touches the work tree (the wheel is built from a copy) or the test venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore.testing.waiting import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.\[\]-]+)==([^\s;\\]+)", re.M)


def _pins(lock: Path) -> dict[str, str]:
    return {
        re.sub(r"\[.*\]", "", name).lower(): version
        for name, version in PIN.findall(lock.read_text())
    }


def test_dev_lock_pins_the_runtime_lock_versions() -> None:
    runtime, dev = _pins(LOCKS / "runtime.txt"), _pins(LOCKS / "dev.txt")
    assert {"grpcio", "protobuf", "rocksdict"} <= runtime.keys()
    assert {name: dev.get(name) for name in runtime} == runtime


def _clean_env() -> dict[str, str]:
    # No PYTHONPATH: the installed package must not fall back to the source tree.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the kvstore wheel and the locked runtime dependencies."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "kvstore", src / "kvstore", ignore=shutil.ignore_patterns("__pycache__"))
    # The build backend comes from the (locked) test venv: nothing resolved today.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", tmp / "dist", src], cwd=tmp)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("kvstore-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    _run([*pip, "--require-hashes", "--no-deps", "-r", LOCKS / "runtime.txt"], cwd=tmp)
    _run([*pip, "--no-deps", wheel], cwd=tmp)
    # The lock satisfies every requirement the wheel declares.
    _run([venv / "bin" / "python", "-m", "pip", "check"], cwd=tmp)
    return venv


def test_wheel_imports_from_the_venv_not_the_source_tree(installed: Path, tmp_path: Path) -> None:
    out = _run([installed / "bin" / "python", "-c",
                "import kvstore, kvstore.pb.rpc_pb2_grpc as g; print(kvstore.__file__)"],
               cwd=tmp_path)  # fmt: skip
    assert out.strip().startswith(str(installed)), out


def test_installed_entry_points_serve_a_put_and_a_get(installed: Path, tmp_path: Path) -> None:
    assert "Usage: kvstore" in _run([installed / "bin" / "kvstore", "--help"], cwd=tmp_path)
    client, peer = free_port(), free_port()
    proc = subprocess.Popen(
        [installed / "bin" / "kvstore", "--name", "pkg", "--data-dir", tmp_path / "data",
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"pkg=http://127.0.0.1:{peer}"],
        cwd=tmp_path, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "ready to serve client requests" in line, proc.stderr.read() if proc.stderr else ""
        kvctl = [installed / "bin" / "kvctl", "--endpoints", f"127.0.0.1:{client}"]
        assert _run([*kvctl, "put", "/pkg/key", "installed"], cwd=tmp_path).strip() == "OK"
        got = _run([*kvctl, "get", "/pkg/key"], cwd=tmp_path, timeout=60)
        assert got.splitlines() == ["/pkg/key", "installed"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
