"""NodeConfig validation and etcd-compatible id derivation."""

from __future__ import annotations

import pytest

from kvstore.server.config import ConfigError, NodeConfig, cluster_id, member_id


def test_member_and_cluster_id_match_etcd_defaults() -> None:
    # etcd's well-known ids for `etcd` started with no flags.
    mid = member_id(["http://localhost:2380"], "etcd-cluster")
    assert mid == 0x8E9E05C52164694D
    assert cluster_id([mid]) == 0xCDF818194E3A8C32


def test_ids_do_not_depend_on_url_or_member_order() -> None:
    assert member_id(["http://a:1", "http://b:2"], "t") == member_id(
        ["http://b:2", "http://a:1"], "t"
    )
    assert cluster_id([3, 1, 2]) == cluster_id([1, 2, 3])
    assert member_id(["http://a:1"], "t1") != member_id(["http://a:1"], "t2")


def three_node(name: str, **kw: object) -> NodeConfig:
    urls = {"kv1": "http://127.0.0.1:12380", "kv2": "http://127.0.0.1:22380",
            "kv3": "http://127.0.0.1:32380"}  # fmt: skip
    return NodeConfig(
        name=name,
        initial_advertise_peer_urls=(urls[name],),
        listen_peer_urls=(urls[name],),
        initial_cluster=",".join(f"{n}={u}" for n, u in urls.items()),
        **kw,  # type: ignore[arg-type]
    )


def test_all_members_derive_the_same_cluster() -> None:
    cfgs = [three_node(n).validate() for n in ("kv1", "kv2", "kv3")]
    assert len({c.cluster_id for c in cfgs}) == 1
    assert len({c.member_id for c in cfgs}) == 3
    assert set(cfgs[0].peers) == {c.member_id for c in cfgs}
    assert cfgs[1].peers[cfgs[1].member_id].name == "kv2"


def test_defaults_are_a_single_node_cluster() -> None:
    cfg = NodeConfig().validate()
    assert cfg.data_dir == "default.kvstore"
    assert list(cfg.peers) == [cfg.member_id]
    assert cfg.election_ticks == 10 and cfg.tick_interval_s == 0.1


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (
            lambda: NodeConfig(name="kv9", initial_cluster="kv1=http://127.0.0.1:1"),
            "--initial-cluster must include this member (--name kv9 not found)",
        ),
        (lambda: three_node("kv1", election_timeout_ms=300), "at least 5 times"),
        (lambda: three_node("kv1", initial_cluster_state="bogus"), "--initial-cluster-state"),
        (lambda: three_node("kv1", heartbeat_interval_ms=0), "--heartbeat-interval"),
        (
            lambda: three_node("kv1", listen_client_urls=("localhost:2379",)),
            "--listen-client-urls: invalid URL",
        ),
        (
            lambda: NodeConfig(name="kv1", initial_cluster="kv1=http://127.0.0.1:2380,broken"),
            "invalid entry 'broken'",
        ),
    ],
)
def test_bad_settings_give_one_clear_line(make, fragment: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as info:
        make().validate()
    msg = str(info.value)
    assert fragment in msg
    assert "\n" not in msg


def test_duplicate_peer_url_is_rejected() -> None:
    cfg = NodeConfig(
        name="a",
        initial_advertise_peer_urls=("http://127.0.0.1:1",),
        initial_cluster="a=http://127.0.0.1:1,b=http://127.0.0.1:1",
    )
    with pytest.raises(ConfigError, match="used by both"):
        cfg.validate()


def test_advertised_urls_must_match_initial_cluster_entry() -> None:
    cfg = NodeConfig(
        name="a",
        initial_advertise_peer_urls=("http://127.0.0.1:2",),
        initial_cluster="a=http://127.0.0.1:1",
    )
    with pytest.raises(ConfigError, match="--initial-advertise-peer-urls"):
        cfg.validate()
