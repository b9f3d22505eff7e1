"""The operator files in ops/ query only what a running node serves.

Every metric name in the Grafana dashboard (ops/grafana/kvstore.json) and in
the Prometheus alerting rules (ops/prometheus/alerts.yml) must appear on a
real node's /metrics (a 1-member kvstore process after some traffic), and
`promtool check rules` must accept the rules where promtool is installed
(Debian: apt-get install prometheus).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from kvstore.client import Client
from kvstore.devcluster import LocalCluster
from kvstore.testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "kvstore.json"
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"

# Series Prometheus makes up itself: never on a node's /metrics.
SYNTHETIC = {"up"}
_NAME = re.compile(r"\b(?:etcd|kvstore|grpc|process)_[a-zA-Z0-9_:]*|\bup\b")


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


_LABELS = re.compile(r"\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def queried_names(exprs: list[str]) -> set[str]:
    """Metric names in PromQL expressions (label matchers and grouping
    clauses, which name labels, are dropped first)."""
    return {m.group(0) for e in exprs for m in _NAME.finditer(_LABELS.sub(" ", e))}


def served_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_files_parse_and_query_something():
    dash, rules = dashboard_exprs(), rule_exprs()
    assert len(dash) >= 20 and len(rules) >= 10
    names = queried_names(dash + rule_exprs())
    # The operator's questions of issue 18, each answered by some query.
    for needed in (
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_failed_total",
        "etcd_server_proposals_pending",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "kvstore_server_apply_duration_seconds_bucket",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_debugging_mvcc_watcher_total",
        "kvstore_lease_active",
    ):
        assert needed in names, needed


@pytest.mark.e2e
def test_every_queried_metric_exists_on_a_running_node(tmp_path):
    cluster = LocalCluster(size=1, base_dir=tmp_path, metrics=True)
    with cluster, Client(cluster.endpoints) as client:  # the cluster starts on enter
        client.put("ops/k", "v")
        client.get("ops/k")
        with client.lease(30) as lease, client.watch("ops/", prefix=True):
            client.put("ops/l", "v", lease=lease)
            url = f"http://127.0.0.1:{cluster.members[0].metrics_port}/metrics"

            def scrape() -> set[str]:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return served_names(r.read().decode())

            served = wait_until(
                lambda: (s := scrape()) and "kvstore_lease_active" in s and s,
                timeout=30,
                what="a full scrape",
            )
    missing = sorted(queried_names(dashboard_exprs() + rule_exprs()) - served - SYNTHETIC)
    assert missing == [], f"queried but not served on /metrics: {missing}"


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in r.stdout
