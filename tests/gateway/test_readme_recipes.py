"""The README's curl recipes work as shown.

Runs every `$ ` line of the README block between the gateway-recipes
markers with bash (GW pointed at a fresh kvstore member's gateway) and
compares its output with the lines the README shows under it; `…` in the
README stands for an id that differs per cluster.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_harness import GatewayNode, start_kvstore

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- gateway-recipes:begin -->", "<!-- gateway-recipes:end -->"


def recipes() -> list[tuple[str, list[str]]]:
    text = README.read_text()
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    lines = [line for line in block.strip().splitlines() if not line.startswith("```")]
    out: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            assert out, f"output before any command: {line!r}"
            out[-1][1].append(line)
    return out


def matches(expected: str, actual: str) -> bool:
    pattern = ".+?".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, actual) is not None


@pytest.fixture
def fresh_member() -> Iterator[GatewayNode]:
    node = start_kvstore()
    try:
        yield node
    finally:
        node.cluster.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_readme_curl_recipes_work_as_shown(fresh_member: GatewayNode) -> None:
    steps = recipes()
    assert len(steps) >= 10 and steps[0][0].startswith("GW=")
    for command, expected in steps[1:]:
        assert command.startswith("curl "), command
        proc = subprocess.run(
            ["bash", "-c", command],
            env={"GW": fresh_member.base, "PATH": "/usr/bin:/bin:/usr/local/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        # --max-time ends the (endless) watch with curl's code 28.
        assert proc.returncode in ((0, 28) if "--max-time" in command else (0,)), proc
        actual = proc.stdout.rstrip("\n").splitlines()
        assert len(actual) == len(expected), (command, proc.stdout)
        for want, got in zip(expected, actual, strict=True):
            assert matches(want, got), f"{command}\n  README: {want}\n  got:    {got}"
