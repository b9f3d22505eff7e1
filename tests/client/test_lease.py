"""Leases: grant/revoke/TTL, the keep-alive context manager, and service registration."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from kvstore.client import Client, LeaseNotFoundError, Op
from kvstore.testing.waiting import wait_until


def test_grant_time_to_live_list_and_revoke(client, ns):
    g = client.lease_grant(30)
    assert g.id != 0 and g.ttl >= 30
    client.put(ns + "k", "v", lease=g.id)
    ttl = client.lease_time_to_live(g.id, keys=True)
    assert ttl.granted_ttl == g.ttl and 0 < ttl.ttl <= g.ttl
    assert ttl.keys == ((ns + "k").encode(),)
    assert g.id in client.leases()
    assert client.lease_keep_alive_once(g.id) == g.ttl
    client.lease_revoke(g.id)
    assert client.get(ns + "k").count == 0
    assert client.lease_time_to_live(g.id).ttl == -1  # unknown lease: -1, no error
    with pytest.raises(LeaseNotFoundError):
        client.lease_revoke(g.id)
    with pytest.raises(LeaseNotFoundError):
        client.lease_keep_alive_once(g.id)


def test_lease_context_manager_keeps_alive_then_revokes(client, ns):
    with client.lease(3) as lease:
        client.put(ns + "k", "v", lease=lease.id)
        # Several renewals mean the key outlived its 3 s TTL thanks to keepalive.
        wait_until(lambda: lease.renewals >= 5, timeout=30, what="5 keepalive renewals")
        assert client.get(ns + "k").count == 1
        assert not lease.expired.is_set()
        lease_id = lease.id
    assert client.get(ns + "k").count == 0
    assert client.lease_time_to_live(lease_id).ttl == -1


_CHILD = textwrap.dedent(
    """
    import sys, threading
    from kvstore.client import Client
    endpoints, key = sys.argv[1].split(","), sys.argv[2]
    client = Client(endpoints)
    with client.lease(2) as lease:
        client.put(key, "alive", lease=lease.id)
        print(lease.id, flush=True)
        threading.Event().wait()  # hold the lease until killed
    """
)


@pytest.mark.integration
def test_key_of_killed_lease_holder_disappears_after_ttl(cluster, client, ns):
    key = ns + "holder"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, ",".join(cluster.endpoints), key],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        lease_id = int(child.stdout.readline())
        assert client.get(key).kv.lease == lease_id
        child.kill()
        child.wait(timeout=10)
        # TTL 2 s (+ etcd's lease expiry granularity and election margin).
        wait_until(lambda: client.get(key).count == 0, timeout=15, what="leased key expired")
        assert client.lease_time_to_live(lease_id).ttl == -1
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_service_registration_re_registers_after_lease_loss(cluster, ns):
    key = ns + "svc/node1"
    with Client(cluster.endpoints) as c:
        with c.register_service(key, "10.0.0.1:80", ttl=3) as reg:
            first = c.get(key).kv
            assert first.value == b"10.0.0.1:80" and first.lease == reg.lease.id
            c.lease_revoke(first.lease)  # simulate losing the lease
            wait_until(
                lambda: c.get(key).count == 1 and c.get(key).kv.lease != first.lease,
                timeout=20,
                what="re-registration under a new lease",
            )
            assert reg.registrations == 2
        assert c.get(key).count == 0  # deregistered on exit


@pytest.mark.integration
def test_keepalive_fails_over_when_its_member_is_killed(cluster, ns):
    with Client(cluster.endpoints, dial_timeout=1.0, command_timeout=15) as c:
        with c.lease(3) as lease:
            c.put(ns + "k", "v", lease=lease.id)
            wait_until(lambda: lease.renewals >= 1, timeout=10, what="first renewal")
            victim = cluster.endpoints.index(c.status().endpoint)  # the pinned member
            cluster.kill(victim)
            try:
                before = lease.renewals
                wait_until(
                    lambda: lease.renewals >= before + 3,
                    timeout=30,
                    what="renewals through another member",
                )
                assert not lease.expired.is_set()
                assert c.get(ns + "k").count == 1
            finally:
                cluster.restart(victim)
        wait_until(
            lambda: c.status(cluster.endpoints[victim]), timeout=30, what="killed member back"
        )


def test_put_accepts_the_lease_object_as_well_as_its_id(client, ns):
    with client.lease(30) as lease:
        client.put(ns + "obj", "v", lease=lease)
        client.put(ns + "id", "v", lease=lease.id)
        client.txn().then(Op.put(ns + "txn", "v", lease=lease)).commit()
        for name in ("obj", "id", "txn"):
            assert client.get(ns + name).kvs[0].lease == lease.id
        ttl = client.lease_time_to_live(lease.id, keys=True)
        assert set(ttl.keys) == {(ns + n).encode() for n in ("obj", "id", "txn")}
    # Revoking the lease object's lease deleted every key attached through it.
    assert client.get(ns, prefix=True).count == 0


def test_put_rejects_a_lease_of_the_wrong_type(client, ns):
    with pytest.raises(TypeError, match="lease must be"):
        client.put(ns + "k", "v", lease="123")
    with pytest.raises(TypeError, match="lease must be"):
        client.put(ns + "k", "v", lease=True)
    assert client.get(ns + "k").count == 0
