"""kvctl cluster and maintenance commands: member, endpoint, snapshot, defrag,
move-leader, alarm.

Owns: etcdctl 3.4-compatible output of these verbs (member IDs in hex,
`endpoint status` columns, `Finished defragmenting etcd member[...]` ...).
`--cluster` on endpoint/defrag expands the endpoints from MemberList like etcdctl.
"""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from kvstore.cli import kvctl_json, snapshot_cmd
from kvstore.cli import kvctl_output as out
from kvstore.cli.kvctl_common import (
    EXIT_UNAVAILABLE,
    KvctlError,
    Settings,
    parse_hex_id,
    pass_settings,
)
from kvstore.client import Member, errors
from kvstore.client._transport import parse_endpoints


def _status_word(m: Member) -> str:
    return "started" if m.name else "unstarted"


def _member_rows(members) -> list[list[str]]:
    return [
        [
            f"{m.id:x}",
            _status_word(m),
            m.name,
            ",".join(m.peer_urls),
            ",".join(m.client_urls),
            str(m.is_learner).lower(),
        ]
        for m in members
    ]


@click.group("member")
def member_group():
    """Membership related commands."""


@member_group.command("list")
@pass_settings
def member_list(s: Settings):
    """List all members in the cluster."""
    r = s.client().member_list()
    rows = _member_rows(r.members)
    out.emit(
        s.write_out,
        r,
        lambda: [click.echo(", ".join(row)) for row in rows],
        lambda: out.print_table(
            ["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"], rows
        ),
    )


@member_group.command("add")
@click.argument("name")
@click.option("--peer-urls", required=True, help="comma separated peer URLs of the new member")
@click.option("--learner", is_flag=True, help="add as a learner (non-voting) member")
@pass_settings
def member_add(s: Settings, name, peer_urls, learner):
    """Add a member NAME to the cluster; prints its ETCD_* start settings."""
    urls = [u.strip() for u in peer_urls.split(",") if u.strip()]
    r = s.client().member_add(urls, learner=learner)

    def simple() -> None:
        click.echo(f"Member {r.member.id:16x} added to cluster {r.header.cluster_id:16x}")
        conf = [
            f"{name if m.id == r.member.id else m.name}={u}" for m in r.members for u in m.peer_urls
        ]
        click.echo("")
        click.echo(f'ETCD_NAME="{name}"')
        click.echo(f'ETCD_INITIAL_CLUSTER="{",".join(conf)}"')
        click.echo(f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{",".join(urls)}"')
        click.echo('ETCD_INITIAL_CLUSTER_STATE="existing"')

    out.emit(s.write_out, r, simple)


@member_group.command("remove")
@click.argument("member_id")
@pass_settings
def member_remove(s: Settings, member_id):
    """Remove the member with hex MEMBER_ID."""
    mid = parse_hex_id(member_id, "member ID")
    r = s.client().member_remove(mid)
    out.emit(
        s.write_out,
        r,
        lambda: click.echo(f"Member {mid:16x} removed from cluster {r.header.cluster_id:16x}"),
    )


@member_group.command("update")
@click.argument("member_id")
@click.option("--peer-urls", required=True, help="comma separated new peer URLs")
@pass_settings
def member_update(s: Settings, member_id, peer_urls):
    """Update the peer URLs of the member with hex MEMBER_ID."""
    mid = parse_hex_id(member_id, "member ID")
    r = s.client().member_update(mid, [u.strip() for u in peer_urls.split(",") if u.strip()])
    out.emit(
        s.write_out,
        r,
        lambda: click.echo(f"Member {mid:16x} updated in cluster {r.header.cluster_id:16x}"),
    )


@member_group.command("promote")
@click.argument("member_id")
@pass_settings
def member_promote(s: Settings, member_id):
    """Promote the learner with hex MEMBER_ID to a voting member."""
    mid = parse_hex_id(member_id, "member ID")
    r = s.client().member_promote(mid)
    out.emit(
        s.write_out,
        r,
        lambda: click.echo(f"Member {mid:16x} promoted in cluster {r.header.cluster_id:16x}"),
    )


# --- endpoint ---------------------------------------------------------------------


def _targets(s: Settings, cluster: bool) -> list[str]:
    if not cluster:
        return s.endpoints
    urls = [u for m in s.client().member_list().members for u in m.client_urls]
    return parse_endpoints(urls)


@click.group("endpoint")
def endpoint_group():
    """Endpoint related commands."""


_cluster_opt = click.option(
    "--cluster", is_flag=True, help="use all endpoints from the cluster member list"
)


@endpoint_group.command("status")
@_cluster_opt
@pass_settings
def endpoint_status(s: Settings, cluster):
    """Print the status of each endpoint."""
    statuses, failed = [], []
    for ep in _targets(s, cluster):
        try:
            statuses.append(s.client().status(ep))
        except errors.ClientError as exc:
            failed.append(f"failed to get the status of endpoint {ep} ({exc.message})")
    rows = [
        [
            st.endpoint,
            f"{st.header.member_id:x}",
            st.version,
            out.human_bytes(st.db_size),
            str(st.is_leader).lower(),
            str(st.is_learner).lower(),
            str(st.raft_term),
            str(st.raft_index),
            str(st.raft_applied_index),
            ", ".join(st.errors),
        ]
        for st in statuses
    ]
    out.emit(
        s.write_out,
        statuses,
        lambda: [click.echo(", ".join(r)) for r in rows],
        doc=kvctl_json.endpoint_status(statuses),
        table=lambda: out.print_table(
            [
                "ENDPOINT",
                "ID",
                "VERSION",
                "DB SIZE",
                "IS LEADER",
                "IS LEARNER",
                "RAFT TERM",
                "RAFT INDEX",
                "RAFT APPLIED INDEX",
                "ERRORS",
            ],
            rows,
        ),
    )
    if failed:
        raise KvctlError("; ".join(failed), EXIT_UNAVAILABLE)


@endpoint_group.command("health")
@_cluster_opt
@pass_settings
def endpoint_health(s: Settings, cluster):
    """Check the health of each endpoint (one linearizable read, like etcdctl 3.4)."""
    unhealthy = 0
    results = []
    docs: list[dict] = []
    for ep in _targets(s, cluster):
        start = time.monotonic()
        try:
            took = s.client().health(ep)
            results.append({"endpoint": ep, "health": True, "took": f"{took * 1000:.6f}ms"})
            docs.append(kvctl_json.endpoint_health(ep, True, took, None))
        except errors.ClientError as exc:
            unhealthy += 1
            results.append({"endpoint": ep, "health": False, "error": exc.message})
            docs.append(
                kvctl_json.endpoint_health(ep, False, time.monotonic() - start, exc.message)
            )
    if s.write_out == "json":
        kvctl_json.echo(docs)
    elif s.write_out == "table":
        out.print_table(
            ["ENDPOINT", "HEALTH", "TOOK", "ERROR"],
            [
                [r["endpoint"], str(r["health"]).lower(), r.get("took", ""), r.get("error", "")]
                for r in results
            ],
        )
    else:
        for r in results:  # etcdctl 3.4 prints these lines on stderr
            if r["health"]:
                click.echo(
                    f"{r['endpoint']} is healthy: successfully committed proposal: "
                    f"took = {r['took']}",
                    err=True,
                )
            else:
                click.echo(
                    f"{r['endpoint']} is unhealthy: failed to commit proposal: {r['error']}",
                    err=True,
                )
    if unhealthy:
        raise KvctlError("unhealthy cluster", EXIT_UNAVAILABLE)


@endpoint_group.command("hashkv")
@_cluster_opt
@click.option("--rev", default=0, type=int, help="maximum revision to hash (default: latest)")
@pass_settings
def endpoint_hashkv(s: Settings, cluster, rev):
    """Print the KV history hash of each endpoint."""
    results = [s.client().hash_kv(ep, rev) for ep in _targets(s, cluster)]
    out.emit(
        s.write_out,
        results,
        lambda: [click.echo(f"{r.endpoint}, {r.hash}") for r in results],
        doc=kvctl_json.endpoint_hashkv(results),
        table=lambda: out.print_table(
            ["ENDPOINT", "HASH"], [[r.endpoint, r.hash] for r in results]
        ),
    )


# --- snapshot / defrag / move-leader / alarm -------------------------------------------


@click.group("snapshot")
def snapshot_group():
    """Save, restore and inspect backend snapshots."""


@snapshot_group.command("save")
@click.argument("filename", type=click.Path(dir_okay=False, writable=True))
@click.option(
    "--progress/--no-progress",
    default=None,
    help="show a progress bar (default: when stderr is a terminal)",
)
@pass_settings
def snapshot_save(s: Settings, filename, progress):
    """Stream a snapshot of one member's backend to FILENAME."""
    client = s.client()
    endpoint = s.endpoints[0] if len(s.endpoints) == 1 else None
    show = progress if progress is not None else sys.stderr.isatty()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        disable=not show,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("snapshot", total=None)

        def on_chunk(received: int, remaining: int) -> None:
            bar.update(task, completed=received, total=received + remaining)

        client.snapshot_save(filename, endpoint=endpoint, progress=on_chunk, timeout=3600)
    click.echo(f"Snapshot saved at {filename}")


@click.command("defrag")
@_cluster_opt
@pass_settings
def defrag_cmd(s: Settings, cluster):
    """Defragment the storage of each endpoint's member."""
    failed = False
    for ep in _targets(s, cluster):
        try:
            s.client().defragment(ep)
            click.echo(f"Finished defragmenting etcd member[{ep}]")
        except errors.ClientError as exc:
            failed = True
            click.echo(f"Failed to defragment etcd member[{ep}] ({exc.message})", err=True)
    if failed:
        raise KvctlError("defragmentation failed on some members", EXIT_UNAVAILABLE)


@click.command("move-leader")
@click.argument("target_id")
@pass_settings
def move_leader_cmd(s: Settings, target_id):
    """Transfer leadership to the member with hex TARGET_ID."""
    target = parse_hex_id(target_id, "member ID")
    r = s.client().transfer_leadership(target)
    if s.write_out == "json":
        out.print_json(r.header)  # etcdctl: the MoveLeader response
    else:
        click.echo(f"Leadership transferred from {r.previous_leader:x} to {target:x}")


@click.group("alarm")
def alarm_group():
    """Alarm related commands."""


@alarm_group.command("list")
@pass_settings
def alarm_list(s: Settings):
    """List all active alarms."""
    alarms = s.client().alarms()
    out.emit(
        s.write_out,
        alarms,
        lambda: [click.echo(f"memberID:{a.member_id} alarm:{a.alarm}") for a in alarms],
        doc=kvctl_json.alarms(alarms),
        table=lambda: out.print_table(
            ["MEMBER ID", "ALARM"], [[f"{a.member_id:x}", a.alarm] for a in alarms]
        ),
    )


@alarm_group.command("disarm")
@pass_settings
def alarm_disarm(s: Settings):
    """Disarm all alarms."""
    alarms = s.client().disarm_alarms()
    out.emit(
        s.write_out,
        alarms,
        lambda: [click.echo(f"memberID:{a.member_id} alarm:{a.alarm}") for a in alarms],
        doc=kvctl_json.alarms(alarms),
    )


# Restore and status work offline on the file; kvctl shares the server
# command's implementation rather than keeping a second one.
snapshot_group.add_command(snapshot_cmd.restore)
snapshot_group.add_command(snapshot_cmd.status)

COMMANDS = [member_group, endpoint_group, snapshot_group, defrag_cmd, move_leader_cmd, alarm_group]
