"""The kvstore image built by the offline path (scripts/docker/build.sh).

What a user of `docker run kvstore` relies on: the server runs as a non-root
user, data goes to the /var/lib/kvstore volume, the health check is wired to
GET /health, and one container alone is a working one-member cluster.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dockerkit import run  # noqa: E402

from kvstore.testing.waiting import free_port, wait_until  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_image_config(kvstore_image: str) -> None:
    (info,) = json.loads(run(["docker", "image", "inspect", kvstore_image]).stdout)
    cfg = info["Config"]
    assert cfg["User"] == "kvstore"
    assert cfg["Entrypoint"] == ["kvstore"]
    assert "/var/lib/kvstore" in cfg["Volumes"]
    assert "/health" in " ".join(cfg["Healthcheck"]["Test"])
    assert {"2379/tcp", "2380/tcp", "2381/tcp"} <= set(cfg["ExposedPorts"])


def test_image_runs_as_non_root_and_owns_its_data_dir(kvstore_image: str) -> None:
    out = run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", kvstore_image,
         "-c", "id -u; stat -c %u /var/lib/kvstore; python3 -c 'import kvstore, grpc, rocksdict'"],
    ).stdout.split()  # fmt: skip
    assert out[0] != "0"
    assert out[1] == out[0]


def test_image_kvstore_help_lists_etcd_flags(kvstore_image: str) -> None:
    out = run(["docker", "run", "--rm", "--network", "none", kvstore_image, "--help"]).stdout
    for flag in ("--initial-cluster", "--listen-client-urls", "--listen-metrics-urls"):
        assert flag in out


def test_single_container_is_a_working_one_member_cluster(kvstore_image: str) -> None:
    name = f"kvtest-single-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "ETCDCTL_API": "3"}
    run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:2379", kvstore_image])
    try:

        def health() -> str:
            fmt = "{{.State.Health.Status}}"
            return run(["docker", "inspect", "-f", fmt, name], timeout=30).stdout.strip()

        try:
            wait_until(lambda: health() == "healthy", timeout=90, interval=0.5, what="healthy")
        except AssertionError as exc:
            logs = run(["docker", "logs", "--tail", "50", name], check=False)
            raise AssertionError(f"{exc}\n{logs.stdout}{logs.stderr}") from exc
        ep = ["--endpoints", f"127.0.0.1:{port}"]
        run(["etcdctl", *ep, "put", "greeting", "hello"], env=env)
        got = run(["etcdctl", *ep, "get", "greeting", "--print-value-only"], env=env).stdout
        assert got.strip() == "hello"
        # The data dir is in the volume, written by the non-root user.
        listing = run(["docker", "exec", name, "ls", "/var/lib/kvstore/data"]).stdout
        assert listing.split(), "data dir is empty"
    finally:
        run(["docker", "rm", "-f", "-v", name], check=False)
