"""`kvstore snapshot restore|status`: offline tools for snapshot files.

Owns: the command line of `kvstore snapshot restore FILE --data-dir DIR
--name --initial-cluster --initial-cluster-token --initial-advertise-peer-urls`
(etcdctl's flags and defaults; builds a new member's data dir, see
server/restore.py) and `kvstore snapshot status FILE` (verifies the
checksum and prints hash, revision, key count and size, like etcdctl).
Files come from `etcdctl snapshot save` / `kvctl` against a kvstore member.
Never: talks to a running server; prints a traceback (errors are one line,
exit code 1; usage errors exit 2).
"""

from __future__ import annotations

import json
import zlib

import click

from kvstore.server.config import DEFAULT_PEER_URL, DEFAULT_TOKEN, ConfigError, split_urls


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def snapshot() -> None:
    """Restore or inspect snapshot files (from `etcdctl snapshot save`)."""


@snapshot.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--data-dir", default="", help="Path to the data directory [default: <name>.kvstore]."
)
@click.option("--name", default="default", show_default=True, help="Human-readable member name.")
@click.option(
    "--initial-cluster",
    default="",
    help="name=peerURL,... of the NEW cluster [default: <name>=<initial-advertise-peer-urls>].",
)
@click.option("--initial-cluster-token", default=DEFAULT_TOKEN, show_default=True)
@click.option("--initial-advertise-peer-urls", default=DEFAULT_PEER_URL, show_default=True)
def restore(
    file: str,
    data_dir: str,
    name: str,
    initial_cluster: str,
    initial_cluster_token: str,
    initial_advertise_peer_urls: str,
) -> None:
    """Restore FILE into a new data dir; start `kvstore` with the same flags."""
    # Deferred (here and in `status`): RocksDB and the node's modules load
    # only for the subcommand that needs them, not for --help.
    from kvstore.server.restore import RestoreError, restore_data_dir

    try:
        urls = split_urls(initial_advertise_peer_urls, "--initial-advertise-peer-urls")
        result = restore_data_dir(
            file,
            data_dir=data_dir or f"{name}.kvstore",
            name=name,
            initial_cluster=initial_cluster,
            initial_cluster_token=initial_cluster_token,
            initial_advertise_peer_urls=urls,
        )
    except (RestoreError, ConfigError, OSError) as exc:
        _fail(str(exc))
        return
    click.echo(
        f"restored snapshot {file} to {result.data_dir} "
        f"(member {result.member_id:x}, cluster {result.cluster_id:x}, "
        f"{result.revisions_restored} revisions)"
    )


@snapshot.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-w", "--write-out", type=click.Choice(["simple", "table", "json"]), default="simple")
def status(file: str, write_out: str) -> None:
    """Verify FILE and print hash, revision, total keys and size."""
    from kvstore.maintenance.backup import BackupError, read_records, verify_file
    from kvstore.mvcc.revision import decode_revision

    try:
        verify_file(file)
        h = 0
        revision = 0
        keys = 0  # like etcd's totalKey: every stored key (here: MVCC revisions)
        size = 0
        for family, key, value in read_records(file, verify=False):
            size += len(key) + len(value)
            h = zlib.crc32(value, zlib.crc32(key, h))
            if family == "kv":
                revision = max(revision, decode_revision(key).main)
                keys += 1
    except (BackupError, OSError) as exc:
        _fail(str(exc))
        return
    import os

    info = {
        "hash": h & 0xFFFFFFFF,
        "revision": revision,
        "totalKey": keys,
        "totalSize": os.path.getsize(file),
    }
    if write_out == "json":
        click.echo(json.dumps(info))
    elif write_out == "table":
        click.echo("+----------+----------+------------+------------+")
        click.echo("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |")
        click.echo("+----------+----------+------------+------------+")
        click.echo(
            f"| {info['hash']:8x} | {revision:8d} | {keys:10d} | {info['totalSize']:10d} |"
        )
        click.echo("+----------+----------+------------+------------+")
    else:
        click.echo(f"{info['hash']:x}, {revision}, {keys}, {info['totalSize']}")


def _fail(message: str) -> None:
    # A ClickException prints one "Error: ..." line and exits 1, both under
    # `kvstore snapshot` and under `kvctl snapshot`, which shares these commands.
    raise click.ClickException(message)


def main(argv: list[str] | None = None) -> None:
    """Entry point for `kvstore snapshot ...` (argv without the word 'snapshot')."""
    snapshot.main(args=argv, prog_name="kvstore snapshot")


if __name__ == "__main__":
    main()
