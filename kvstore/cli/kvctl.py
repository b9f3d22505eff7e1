"""`kvctl`: an etcdctl-compatible command line for kvstore (and etcd) clusters.

Owns: the click command group, the global flags (--endpoints / KVCTL_ENDPOINTS,
--write-out, --dial-timeout, --command-timeout; etcdctl's security flags
--cacert, --cert, --key, --insecure-skip-tls-verify, --insecure-transport,
--user, --password, each also as KVCTL_<NAME> or ETCDCTL_<NAME>) and `main()`, which turns
every failure into one "Error: ..." line on stderr and a distinct exit code:

    0 ok   1 other error   2 bad input/usage   3 cluster unreachable/unavailable
    4 not found   5 precondition failed   130 interrupted

The verbs live in kvctl_kv (put/get/del/txn/compaction/watch), kvctl_lease
(lease/lock/elect), kvctl_admin (member/endpoint/snapshot/defrag/move-leader/
alarm), kvctl_auth (user/role/auth) and kvctl_config (config load/dump).

Must never: print a Python traceback for a client or usage error.
"""

from __future__ import annotations

import importlib.metadata
import sys

import click

from kvstore.cli import kvctl_admin, kvctl_auth, kvctl_config, kvctl_kv, kvctl_lease
from kvstore.cli.kvctl_common import (
    EXIT_OTHER,
    EXIT_USAGE,
    KvctlError,
    Settings,
    exit_code_for,
    parse_duration,
)
from kvstore.cli.kvctl_output import FORMATS
from kvstore.client import ClientTLS, errors
from kvstore.client._transport import parse_endpoints

_EPILOG = """Exit codes: 0 ok, 1 other error, 2 bad input/usage, 3 cluster
unreachable/unavailable, 4 not found, 5 precondition failed, 130 interrupted."""


def _env(name: str) -> list[str]:
    """KVCTL_<NAME> first, then etcdctl's ETCDCTL_<NAME>."""
    return [f"KVCTL_{name}", f"ETCDCTL_{name}"]


@click.group(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--endpoints",
    envvar="KVCTL_ENDPOINTS",
    default="127.0.0.1:2379",
    show_default=True,
    help="comma separated gRPC endpoints",
)
@click.option(
    "-w",
    "--write-out",
    type=click.Choice(FORMATS),
    default="simple",
    show_default=True,
    help="output format",
)
@click.option(
    "--dial-timeout",
    default="2s",
    show_default=True,
    help="dial timeout per endpoint (e.g. 2s, 500ms)",
)
@click.option(
    "--command-timeout",
    default="5s",
    show_default=True,
    help="timeout of each short-running command",
)
@click.option("--cacert", envvar=_env("CACERT"), default="", help="verify servers with this CA")
@click.option("--cert", envvar=_env("CERT"), default="", help="client certificate (TLS)")
@click.option("--key", envvar=_env("KEY"), default="", help="key of the client certificate")
@click.option(
    "--insecure-skip-tls-verify",
    envvar=_env("INSECURE_SKIP_TLS_VERIFY"),
    is_flag=True,
    help="trust any server certificate (test clusters only)",
)
@click.option(
    "--insecure-transport",
    envvar=_env("INSECURE_TRANSPORT"),
    type=bool,
    default=True,
    show_default=True,
    help="plaintext when no TLS flag and no https:// endpoint is given (etcdctl's flag)",
)
@click.option("--user", envvar=_env("USER"), default="", help="username[:password]")
@click.option("--password", envvar=_env("PASSWORD"), default="", help="password of --user")
@click.pass_context
def cli(
    ctx: click.Context, endpoints, write_out, dial_timeout, command_timeout,
    cacert, cert, key, insecure_skip_tls_verify, insecure_transport, user, password,
):  # fmt: skip
    """kvctl: a command line client for kvstore and etcd v3 clusters."""
    try:
        eps = parse_endpoints(endpoints)
    except ValueError as exc:
        raise KvctlError(str(exc), EXIT_USAGE) from None
    https = any(ep.strip().startswith("https://") for ep in endpoints.split(","))
    tls = None
    if cacert or cert or key or insecure_skip_tls_verify or https or not insecure_transport:
        tls = ClientTLS(cacert, cert, key, insecure_skip_verify=insecure_skip_tls_verify)
    name, password = _credentials(user, password)
    settings = Settings(
        eps, write_out, parse_duration(dial_timeout), parse_duration(command_timeout),
        tls=tls, user=name, password=password,
    )  # fmt: skip
    ctx.obj = settings
    ctx.call_on_close(settings.close)


def _credentials(user: str, password: str) -> tuple[str | None, str | None]:
    """etcdctl's --user / --password: "name:password", or a name with --password,
    or a name alone (the password is asked for, on the terminal)."""
    if not user:
        if password:
            raise KvctlError("--password requires --user", EXIT_USAGE)
        return None, None
    if password:
        return user, password
    name, sep, pw = user.partition(":")
    if not sep:
        pw = click.prompt("Password", hide_input=True, default="", show_default=False, err=True)
    if not name:
        raise KvctlError("empty user name is not allowed", EXIT_USAGE)
    return name, pw


def _version() -> str:
    try:
        return importlib.metadata.version("kvstore")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0.1.0+source"


@cli.command("version")
def version_cmd():
    """Print the kvctl version and the API version it speaks."""
    click.echo(f"kvctl version: {_version()}")
    click.echo("API version: 3.4")


for _module in (kvctl_kv, kvctl_lease, kvctl_admin, kvctl_auth, kvctl_config):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run kvctl and exit with its status code."""
    sys.exit(run(argv))


_GLOBAL_WITH_VALUE = {
    "--endpoints", "-w", "--write-out", "--dial-timeout", "--command-timeout",
    "--cacert", "--cert", "--key", "--user", "--password",
}  # fmt: skip
# Global boolean flags (also hoisted; "--flag=value" forms included).
_GLOBAL_FLAGS = {"--insecure-skip-tls-verify", "--insecure-transport"}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global flags given after the verb to the front, as etcdctl (cobra)
    accepts `kvctl get k -w json`. Stops at `--` (a command's own arguments)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_FLAGS:
            front.append(arg)
        elif name in _GLOBAL_WITH_VALUE:
            if "=" in arg or i + 1 >= len(argv):
                front.append(arg)
            else:
                front.extend(argv[i : i + 2])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def run(argv: list[str] | None = None) -> int:
    """Run kvctl with `argv`; report failures on stderr; return the exit code."""
    code = EXIT_OTHER
    argv = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = cli.main(args=argv, prog_name="kvctl", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:  # Ctrl-C / EOF at a prompt
        code = 130
    except KvctlError as exc:
        exc.show()
        code = exc.exit_code
    except click.ClickException as exc:  # usage errors and bad parameters
        exc.show()
        code = EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except errors.ClientError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        code = exit_code_for(exc)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = EXIT_OTHER
    except (OSError, ValueError) as exc:  # e.g. unwritable snapshot path, bad number
        click.echo(f"Error: {exc}", err=True)
        code = EXIT_USAGE if isinstance(exc, ValueError) else EXIT_OTHER
    except Exception as exc:  # noqa: BLE001 - last resort: one line, never a traceback
        click.echo(f"Error: internal error: {type(exc).__name__}: {exc}", err=True)
        code = EXIT_OTHER
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    main()
