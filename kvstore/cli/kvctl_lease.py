"""kvctl lease commands and the lease-based recipes: `lease ...`, `lock`, `elect`.

Owns: etcdctl-compatible output of the lease verbs, and the hold-until-signal
behaviour of `lock` / `elect` (release on SIGINT/SIGTERM, exit non-zero when
the session lease is lost).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import click

from kvstore.cli import kvctl_json
from kvstore.cli import kvctl_output as out
from kvstore.cli.kvctl_common import (
    EXIT_UNAVAILABLE,
    KvctlError,
    Settings,
    parse_hex_id,
    pass_settings,
)
from kvstore.client import errors


@click.group("lease")
def lease_group():
    """Lease related commands."""


@lease_group.command("grant")
@click.argument("ttl", type=int)
@pass_settings
def lease_grant(s: Settings, ttl):
    """Create a lease with TTL seconds."""
    r = s.client().lease_grant(ttl)
    out.emit(s.write_out, r, lambda: click.echo(f"lease {r.id:016x} granted with TTL({r.ttl}s)"))


@lease_group.command("revoke")
@click.argument("lease_id")
@pass_settings
def lease_revoke(s: Settings, lease_id):
    """Revoke a lease (deleting its keys)."""
    lid = parse_hex_id(lease_id, "lease ID")
    h = s.client().lease_revoke(lid)
    out.emit(s.write_out, h, lambda: click.echo(f"lease {lid:016x} revoked"))


@lease_group.command("timetolive")
@click.argument("lease_id")
@click.option("--keys", is_flag=True, help="get keys attached to this lease")
@pass_settings
def lease_timetolive(s: Settings, lease_id, keys):
    """Get lease information."""
    r = s.client().lease_time_to_live(parse_hex_id(lease_id, "lease ID"), keys=keys)

    def simple() -> None:
        if r.ttl == -1:
            click.echo(f"lease {r.id:016x} already expired")
            return
        line = f"lease {r.id:016x} granted with TTL({r.granted_ttl}s), remaining({r.ttl}s)"
        if keys:
            names = " ".join(k.decode("utf-8", "replace") for k in r.keys)
            line += f", attached keys([{names}])"
        click.echo(line)

    out.emit(s.write_out, r, simple)


@lease_group.command("list")
@pass_settings
def lease_list(s: Settings):
    """List all active leases."""
    r = s.client().lease_leases()
    ids = r.ids

    def simple() -> None:
        click.echo(f"found {len(ids)} leases")
        for lid in ids:
            click.echo(f"{lid:016x}")

    out.emit(
        s.write_out,
        r,
        simple,
        lambda: out.print_table(["LEASE"], [[f"{i:016x}"] for i in ids]),
    )


@lease_group.command("keep-alive")
@click.argument("lease_id")
@click.option("--once", is_flag=True, help="renew once and exit")
@pass_settings
def lease_keep_alive(s: Settings, lease_id, once):
    """Keep a lease alive (every TTL/3) until interrupted."""
    lid = parse_hex_id(lease_id, "lease ID")
    client = s.client()
    stop = threading.Event()
    while True:
        try:
            r = client.lease_renew(lid)
        except errors.LeaseNotFoundError:
            if s.write_out != "json":  # etcdctl prints this line in simple mode only
                click.echo(f"lease {lid:016x} expired or revoked.")
            raise KvctlError(f"lease {lid:016x} expired or revoked", 4) from None
        if s.write_out == "json":
            out.print_json(r)
        else:
            click.echo(f"lease {lid:016x} keepalived with TTL({r.ttl})")
        if once or stop.wait(max(r.ttl / 3.0, 0.5)):
            return


# --- lock / elect -------------------------------------------------------------------


def _wait_for_signal(lease) -> None:
    """Block until SIGINT/SIGTERM (-> return) or session loss (-> error)."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(0.2):
            if lease.expired.is_set():
                raise KvctlError("session expired", EXIT_UNAVAILABLE)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_owner(s: Settings, r) -> None:
    """etcdctl prints the owner key's Get response (JSON with -w json)."""
    if s.write_out == "json":
        out.print_json(r)
    else:
        out.simple_get(r)
    sys.stdout.flush()


@click.command("lock", context_settings={"ignore_unknown_options": True})
@click.argument("lockname")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--ttl", default=10, type=int, help="timeout for the session lease (seconds)")
@pass_settings
def lock_cmd(s: Settings, lockname, command, ttl):
    """Acquire LOCKNAME; run COMMAND while holding it (ETCD_LOCK_KEY/ETCD_LOCK_REV
    in its environment), or print the lock key and hold until interrupted."""
    lock = s.client().lock(lockname, ttl=ttl)
    held = lock.acquire()
    try:
        if command:
            env = {
                **os.environ,
                "ETCD_LOCK_KEY": held.key.decode(),
                "ETCD_LOCK_REV": str(held.revision),
            }
            rc = subprocess.run(list(command), env=env, check=False).returncode
            if rc:
                raise KvctlError(f"command {command[0]} exited with status {rc}", rc)
            return
        _print_owner(s, s.client().get(held.key))
        _wait_for_signal(lock.lease)
    finally:
        lock.release()


@click.command("elect")
@click.argument("election_name")
@click.argument("proposal", required=False)
@click.option("-l", "--listen", is_flag=True, help="observe the election")
@click.option("--ttl", default=10, type=int, help="timeout for the session lease (seconds)")
@pass_settings
def elect_cmd(s: Settings, election_name, proposal, listen, ttl):
    """Campaign in ELECTION_NAME with PROPOSAL and hold leadership until
    interrupted; with -l print the leader on every change."""
    election = s.client().election(election_name, ttl=ttl)
    if listen:
        for kv in election.observe():
            if s.write_out == "json":
                # etcdctl prints the observed Get response; the client's
                # observe() yields the leader key only, so the header is absent.
                kvctl_json.echo({"kvs": [kvctl_json.key_value(kv)], "count": 1})
            else:
                out.print_kv(kv)
            sys.stdout.flush()
        return
    if proposal is None:
        raise click.UsageError("elect needs ELECTION_NAME and PROPOSAL (or -l)")
    leader = election.campaign(proposal)
    try:
        _print_owner(s, s.client().get(leader.key))
        _wait_for_signal(election.lease)
    finally:
        election.resign()


COMMANDS = [lease_group, lock_cmd, elect_cmd]
