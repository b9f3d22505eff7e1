"""Static checks of the container packaging: Dockerfile and docker-compose.yml.

These need no Docker engine: the compose file is parsed by the installed Compose
tool (`config`, which is what rejects a file the tool cannot read) and by YAML,
and every member's environment is fed to the real `kvstore` flag parser, so a
misspelt KVSTORE_* variable or an inconsistent cluster definition fails here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dockerkit import COMPOSE_FILE, ROOT, SERVICES, compose_command, run  # noqa: E402

from kvstore.cli.server_cmd import _command, build_config  # noqa: E402

pytestmark = pytest.mark.docker

DOCKERFILE = ROOT / "Dockerfile"
SERVER_ENVVARS = {p.envvar for p in _command.params if isinstance(p.envvar, str)}


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as the Compose tool resolves it (anchors, defaults, ${VAR})."""
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())}
    proc = run([*cmd, "-f", str(COMPOSE_FILE), "config"], timeout=60, env=env)
    return yaml.safe_load(proc.stdout)


def test_compose_file_uses_the_spec_without_version_key() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert "version" not in raw  # obsolete in v2, optional in v1 >= 1.27
    assert set(raw["services"]) == set(SERVICES)


def test_compose_services_shape(resolved: dict) -> None:
    services = resolved["services"]
    assert set(services) == set(SERVICES)
    for name, svc in services.items():
        assert svc["image"] == "kvstore:latest", name
        assert svc["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim", name
        assert svc["restart"] == "unless-stopped", name
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and "/readyz" in " ".join(test), name
        volumes = svc["volumes"]
        volume_targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in volumes]
        assert volume_targets == ["/var/lib/kvstore"], name
    assert set(resolved["volumes"]) == {f"{s}-data" for s in SERVICES}


def test_compose_publishes_each_client_port_on_the_default_host_ports(resolved: dict) -> None:
    expected = {"kv1": "2379", "kv2": "22379", "kv3": "32379"}
    for name, svc in resolved["services"].items():
        (port,) = svc["ports"]
        if isinstance(port, dict):  # v2 prints the long syntax
            published, target, host_ip = str(port["published"]), port["target"], port["host_ip"]
        else:  # v1: "127.0.0.1:2379:2379/tcp"
            host_ip, published, target = port.split("/")[0].split(":")
        assert (host_ip, published, int(target)) == ("127.0.0.1", expected[name], 2379)


def test_compose_ports_and_image_follow_environment_variables() -> None:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(Path.home()),
        "KVSTORE_IMAGE": "kvstore:other",
        "KVSTORE_KV1_PORT": "41001",
        "KVSTORE_KV2_PORT": "41002",
        "KVSTORE_KV3_PORT": "41003",
    }
    out = run([*cmd, "-f", str(COMPOSE_FILE), "config"], timeout=60, env=env).stdout
    for port in ("41001", "41002", "41003"):
        assert re.search(rf"\b{port}\b", out), port
    assert out.count("image: kvstore:other") == 3


def test_compose_environment_is_a_valid_server_configuration(
    resolved: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each member's environment, parsed by the real `kvstore` flags, validates."""
    members = {}
    for name, svc in resolved["services"].items():
        env = svc["environment"]
        unknown = set(env) - SERVER_ENVVARS
        assert not unknown, f"{name}: variables the server does not read: {unknown}"
        for var in SERVER_ENVVARS:
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, str(value))
        ctx = _command.make_context("kvstore", [])
        cfg = build_config(ctx.params)  # exits 2 with one line if invalid
        assert cfg.name == name
        members[name] = cfg
    # Distinct members of one cluster: same cluster id, three member ids.
    assert len({cfg.member_id for cfg in members.values()}) == 3
    assert len({cfg.cluster_id for cfg in members.values()}) == 1
    assert {cfg.data_dir for cfg in members.values()} == {"/var/lib/kvstore/data"}
    (initial_cluster,) = {svc["environment"]["KVSTORE_INITIAL_CLUSTER"] for svc in
                          resolved["services"].values()}  # fmt: skip
    for name, cfg in members.items():
        assert f"{name}={cfg.initial_advertise_peer_urls[0]}" in initial_cluster.split(",")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_kvstore_as_non_root_with_a_data_volume_and_healthcheck() -> None:
    instr = _dockerfile_instructions()
    assert instr[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    final = instr[max(i for i, (w, _) in enumerate(instr) if w == "FROM") :]
    users = [rest for w, rest in final if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(w == "VOLUME" and "/var/lib/kvstore" in rest for w, rest in final)
    (health,) = [rest for w, rest in final if w == "HEALTHCHECK"]
    assert "/health" in health and "curl" not in health
    assert ("ENTRYPOINT", '["kvstore"]') in final
    envs = " ".join(rest for w, rest in final if w == "ENV")
    for var in re.findall(r"\b(KVSTORE_[A-Z_]+)=", envs):
        assert var in SERVER_ENVVARS, var
