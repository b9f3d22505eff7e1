"""/livez, /readyz, /health and /version on kvstore (etcd 3.5's probes).

- A healthy member: every check passes, ?verbose lists them, ?exclude=
  drops one, /readyz/<check> runs one; wrong method 405, unknown check 404.
- A NOSPACE alarm: /readyz fails (nospace_alarm) while /livez stays live;
  /health is 503 unless ?exclude=NOSPACE; disarming makes it ready again.
- Leader loss (the other two members of three killed): /readyz fails on
  linearizable_read, /livez stays live, /health 503 but
  /health?serializable=true 200 (etcd 3.5's semantics).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from gateway_harness import GatewayNode, http

from kvstore.testing.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

READYZ_CHECKS = ["data_corruption", "serializable_read", "linearizable_read", "non_learner",
                 "nospace_alarm"]  # fmt: skip


def get(base: str, path: str) -> tuple[int, str]:
    status, body = http("GET", base + path, None, 5)
    return status, body.decode()


def test_probes_on_a_healthy_member(kvstore_gw: GatewayNode) -> None:
    for base in (kvstore_gw.base, kvstore_gw.metrics_base):
        assert get(base, "/livez") == (200, "ok\n")
        assert get(base, "/readyz") == (200, "ok\n")
        status, text = get(base, "/readyz?verbose")
        assert status == 200
        assert text == "".join(f"[+]{c} ok\n" for c in READYZ_CHECKS) + "ok\n"
        status, text = get(base, "/readyz?verbose&exclude=non_learner&exclude=nospace_alarm")
        assert text == "".join(f"[+]{c} ok\n" for c in READYZ_CHECKS[:3]) + "ok\n"
        assert get(base, "/livez?verbose") == (200, "[+]serializable_read ok\nok\n")
        assert get(base, "/readyz/linearizable_read") == (200, "ok\n")
        assert get(base, "/readyz/no_such_check")[0] == 404
        assert get(base, "/health") == (200, '{"health":"true"}')
        version = json.loads(get(base, "/version")[1])
        assert version == {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}
    status, _ = http("POST", kvstore_gw.base + "/readyz", b"", 5)
    assert status == 405


def _alarm(node: GatewayNode, action: str) -> dict:
    status_code, raw = node.post("/v3/maintenance/status", {})
    member = json.loads(raw)["header"]["member_id"]
    status_code, raw = node.post(
        "/v3/maintenance/alarm", {"action": action, "memberID": member, "alarm": "NOSPACE"}
    )
    assert status_code == 200, raw
    return json.loads(raw)


def test_nospace_alarm_makes_readyz_fail_not_livez(kvstore_gw: GatewayNode) -> None:
    base = kvstore_gw.base
    _alarm(kvstore_gw, "ACTIVATE")
    try:
        status, text = get(base, "/readyz?verbose")
        assert status == 503
        assert "[-]nospace_alarm failed: alarm activated: NOSPACE\n" in text
        assert "[+]linearizable_read ok\n" in text
        assert get(base, "/readyz?exclude=nospace_alarm") == (200, "ok\n")
        assert get(base, "/livez") == (200, "ok\n")
        assert get(base, "/health") == (503, '{"health":"false"}')
        assert get(base, "/health?exclude=NOSPACE") == (200, '{"health":"true"}')
        # The alarm is visible through the gateway as etcd shows it.
        alarms = _alarm(kvstore_gw, "GET")["alarms"]
        assert [a["alarm"] for a in alarms] == ["NOSPACE"]
    finally:
        _alarm(kvstore_gw, "DEACTIVATE")
    assert get(base, "/readyz") == (200, "ok\n")
    assert get(base, "/health") == (200, '{"health":"true"}')


@pytest.fixture
def three_members() -> Iterator[object]:
    from kvstore.devcluster import LocalCluster

    cluster = LocalCluster(size=3, metrics=True).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_leader_loss_makes_readyz_fail_livez_stays(three_members: object) -> None:
    cluster = three_members
    base = f"http://127.0.0.1:{cluster.members[0].metrics_port}"  # type: ignore[attr-defined]
    wait_until(lambda: get(base, "/readyz")[0] == 200, timeout=30, what="member 0 ready")
    cluster.kill(1)  # type: ignore[attr-defined]
    cluster.kill(2)  # type: ignore[attr-defined]

    def not_ready() -> bool:
        status, text = get(base, "/readyz?verbose")
        return status == 503 and "[-]linearizable_read failed" in text

    wait_until(not_ready, timeout=30, what="/readyz not ready without a leader")
    status, text = get(base, "/readyz?verbose")
    assert "[+]serializable_read ok\n" in text
    assert get(base, "/livez") == (200, "ok\n")
    assert get(base, "/health")[0] == 503
    assert get(base, "/health?serializable=true") == (200, '{"health":"true"}')
