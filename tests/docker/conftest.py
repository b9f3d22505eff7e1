"""Fixtures for the Docker tests: the image (offline build) and a compose cluster.

Skips every docker test with a clear reason when no Docker engine answers, when no
Compose tool is installed, or when the image cannot be built — unless
KVSTORE_DOCKER_REQUIRED=1 (CI with Docker), where those are failures.
KVSTORE_DOCKER_TEST_IMAGE=<tag> uses an existing image instead of building one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dockerkit import (  # noqa: E402 - after the path insert
    TEST_IMAGE,
    ComposeCluster,
    build_image,
    compose_command,
    docker_unavailable_reason,
    image_exists,
)

REQUIRED = os.environ.get("KVSTORE_DOCKER_REQUIRED") == "1"


def _skip_or_fail(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (KVSTORE_DOCKER_REQUIRED=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    reason = docker_unavailable_reason()
    if reason:
        _skip_or_fail(reason)


@pytest.fixture(scope="session")
def compose_cmd(docker_engine: None) -> list[str]:
    cmd = compose_command()
    if cmd is None:
        _skip_or_fail("neither docker-compose nor `docker compose` is installed")
    return cmd  # type: ignore[return-value]


@pytest.fixture(scope="session")
def kvstore_image(docker_engine: None) -> str:
    """The project image, built once per session by scripts/docker/build.sh."""
    given = os.environ.get("KVSTORE_DOCKER_TEST_IMAGE")
    if given:
        if not image_exists(given):
            _skip_or_fail(f"KVSTORE_DOCKER_TEST_IMAGE={given} does not exist")
        return given
    started = time.monotonic()
    try:
        build_image(TEST_IMAGE)
    except Exception as exc:  # noqa: BLE001 - any build failure means: cannot test
        _skip_or_fail(f"cannot build the image with scripts/docker/build.sh: {exc}")
    print(f"\n[docker] built {TEST_IMAGE} in {time.monotonic() - started:.0f}s")
    return TEST_IMAGE


@pytest.fixture(scope="session")
def compose_cluster(
    compose_cmd: list[str], kvstore_image: str, request: pytest.FixtureRequest
) -> Iterator[ComposeCluster]:
    """A three-member cluster from docker-compose.yml, healthy; `down -v` at the end."""
    cluster = ComposeCluster(compose_cmd, kvstore_image)
    try:
        started = time.monotonic()
        cluster.up()
        cluster.wait_healthy()
        took = time.monotonic() - started
        print(f"\n[docker] {cluster.project}: up -d to healthy in {took:.1f}s")
        yield cluster
    finally:
        if request.session.testsfailed:
            print(f"\n[docker] {cluster.project} logs:\n{cluster.logs(tail=200)}")
        cluster.down(volumes=True)


@pytest.fixture
def cluster(compose_cluster: ComposeCluster) -> ComposeCluster:
    """The session cluster, brought back up and healthy if an earlier test left it down."""
    compose_cluster.up()  # idempotent: starts only what is missing or stopped
    compose_cluster.wait_healthy()
    return compose_cluster
