"""Drive the docker-compose cluster from tests: build, up, kill, partition, down.

Owns: finding a Docker engine and a Compose tool, building the image through the
offline path (scripts/docker/build.sh, cached base image), and `ComposeCluster`,
one compose project with a unique name and host ports chosen free at test time,
so tests never touch a user's cluster (kvstore:latest, ports 2379/22379/32379).
Never: sleeps to synchronise (every wait has a deadline), leaves a project
behind (callers tear down with `down -v` in a finally), or runs a command without
a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc

from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
BUILD_SCRIPT = ROOT / "scripts" / "docker" / "build.sh"
SERVICES = ("kv1", "kv2", "kv3")
# The image the tests build; a separate tag so a user's kvstore:latest is left alone.
TEST_IMAGE = "kvstore:docker-tests"
BUILD_TIMEOUT_S = 900  # a cold base image (debootstrap) takes ~2 min here
HEALTHY_TIMEOUT_S = 90


def run(
    cmd: Sequence[str], timeout: float = 60, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; on failure raise with its output."""
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers, else why the docker tests must skip."""
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    try:
        proc = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out: no Docker engine reachable"
    if proc.returncode != 0:
        return f"no Docker engine reachable (`docker info`: {proc.stderr.strip()[:200]})"
    return None


def compose_command() -> list[str] | None:
    """docker-compose (v1, Debian's) or `docker compose` (v2); KVSTORE_COMPOSE overrides."""
    if os.environ.get("KVSTORE_COMPOSE"):
        return os.environ["KVSTORE_COMPOSE"].split()
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        v2 = run(["docker", "compose", "version"], timeout=20, check=False)
        if v2.returncode == 0:
            return ["docker", "compose"]
    return None


def image_exists(tag: str) -> bool:
    return run(["docker", "image", "inspect", tag], timeout=30, check=False).returncode == 0


def build_image(tag: str = TEST_IMAGE) -> str:
    """Build `tag` through the offline path; returns the build log. Raises on failure."""
    # The interpreter running the tests builds the wheels (it is the project's 3.11).
    env = {**os.environ, "KVSTORE_IMAGE": tag, "PYTHON": sys.executable}
    proc = run(["bash", str(BUILD_SCRIPT)], timeout=BUILD_TIMEOUT_S, env=env)
    return proc.stdout + proc.stderr


def put(endpoint: str, key: bytes, value: bytes, timeout: float = 5.0) -> int:
    """Put through one endpoint; returns the revision. Raises grpc.RpcError."""
    with grpc.insecure_channel(endpoint) as channel:
        resp = rpc_pb2_grpc.KVStub(channel).Put(
            rpc_pb2.PutRequest(key=key, value=value), timeout=timeout
        )
    return resp.header.revision


def get_prefix(
    endpoint: str, prefix: bytes, serializable: bool = True, timeout: float = 5.0
) -> dict[bytes, bytes]:
    """All keys under `prefix` as one endpoint sees them (serializable: its local state)."""
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    with grpc.insecure_channel(endpoint) as channel:
        resp = rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=end, serializable=serializable),
            timeout=timeout,
        )
    return {kv.key: kv.value for kv in resp.kvs}


class ComposeCluster:
    """One docker-compose project of docker-compose.yml with its own name and ports."""

    def __init__(self, compose: list[str], image: str, name_prefix: str = "kvtest") -> None:
        self.compose_cmd = compose
        self.image = image
        self.project = f"{name_prefix}{uuid.uuid4().hex[:8]}"
        self.ports = {svc: free_port() for svc in SERVICES}
        self.env = {
            **os.environ,
            "KVSTORE_IMAGE": image,
            "KVSTORE_PUBLISH_ADDR": "127.0.0.1",
            "KVSTORE_CLUSTER_TOKEN": self.project,
            **{f"KVSTORE_{svc.upper()}_PORT": str(port) for svc, port in self.ports.items()},
        }

    # ---- compose ----
    def compose(self, *args: str, timeout: float = 120, check: bool = True):
        cmd = [*self.compose_cmd, "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        return run(cmd, timeout=timeout, check=check, env=self.env)

    def up(self) -> None:
        # --no-build: the image was built by the offline path; never build (or pull) here.
        self.compose("up", "-d", "--no-build", timeout=180)

    def down(self, volumes: bool = False) -> None:
        self.compose("down", *(["-v"] if volumes else []), "--timeout", "10", timeout=180)

    def logs(self, tail: int = 60) -> str:
        proc = self.compose("logs", "--no-color", "--tail", str(tail), timeout=60, check=False)
        return proc.stdout + proc.stderr

    # ---- containers ----
    def _label_filter(self, service: str | None = None) -> list[str]:
        args = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        return args

    def containers(self) -> list[str]:
        return run(["docker", "ps", "-a", "-q", *self._label_filter()], timeout=30).stdout.split()

    def container(self, service: str) -> str:
        ids = run(["docker", "ps", "-a", "-q", *self._label_filter(service)], timeout=30).stdout
        assert len(ids.split()) == 1, f"expected one container for {service}, got {ids!r}"
        return ids.strip()

    def volumes(self) -> list[str]:
        out = run(["docker", "volume", "ls", "-q", *self._label_filter()], timeout=30).stdout
        return out.split()

    def network_names(self) -> list[str]:
        fmt = ["--format", "{{.Name}}"]
        return run(
            ["docker", "network", "ls", *fmt, *self._label_filter()], timeout=30
        ).stdout.split()

    def network(self) -> str:
        names = self.network_names()
        assert len(names) == 1, f"expected one network for {self.project}, got {names}"
        return names[0]

    def health(self, service: str) -> str:
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        proc = run(["docker", "inspect", "-f", fmt, self.container(service)], timeout=30)
        return proc.stdout.strip()

    def wait_healthy(self, services: Sequence[str] = SERVICES, timeout: float = HEALTHY_TIMEOUT_S):
        def all_healthy() -> bool:
            return all(self.health(svc) == "healthy" for svc in services)

        try:
            wait_until(all_healthy, timeout=timeout, interval=0.5, what=f"{services} healthy")
        except AssertionError as exc:
            states = {svc: self.health(svc) for svc in services}
            raise AssertionError(f"{exc}; states {states}\n{self.logs()}") from exc

    def kill(self, service: str) -> None:
        run(["docker", "kill", self.container(service)], timeout=60)

    def start(self, service: str) -> None:
        run(["docker", "start", self.container(service)], timeout=60)

    def disconnect(self, service: str) -> None:
        cid = self.container(service)
        run(["docker", "network", "disconnect", self.network(), cid], timeout=60)

    def connect(self, service: str) -> None:
        # The service-name alias is what peers resolve (http://kv1:2380); a plain
        # `network connect` would drop it.
        run(
            ["docker", "network", "connect", "--alias", service, self.network(),
             self.container(service)],
            timeout=60,
        )  # fmt: skip

    def exec_python(self, service: str, code: str, timeout: float = 60):
        """Run Python inside a member's container (its venv has kvstore and grpcio)."""
        return run(
            ["docker", "exec", self.container(service), "python3", "-c", code],
            timeout=timeout, check=False,
        )  # fmt: skip

    # ---- clients ----
    def endpoint(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def endpoints(self, services: Sequence[str] = SERVICES) -> list[str]:
        return [self.endpoint(svc) for svc in services]

    def etcdctl(
        self,
        *args: str,
        endpoints: Sequence[str] | None = None,
        timeout: float = 30,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["etcdctl", "--endpoints", ",".join(endpoints or self.endpoints()), *args]
        return run(cmd, timeout=timeout, check=check, env={**os.environ, "ETCDCTL_API": "3"})

    def leader(self, services: Sequence[str] = SERVICES) -> str:
        """The service whose member is the leader, from `etcdctl endpoint status -w json`
        asked of `services` (leave out a member that is down)."""
        out = self.etcdctl("endpoint", "status", "-w", "json", endpoints=self.endpoints(services))
        statuses = json.loads(out.stdout)
        by_endpoint = {svc: None for svc in services}
        for st in statuses:
            svc = next(s for s in services if self.endpoint(s) == st["Endpoint"])
            by_endpoint[svc] = st["Status"]
        leaders = [
            svc
            for svc, st in by_endpoint.items()
            if st is not None and st["leader"] == st["header"]["member_id"]
        ]
        assert len(leaders) == 1, f"expected one leader, statuses {statuses}"
        return leaders[0]
