"""Shared pieces of kvctl: global settings, the lazily created client, and
the mapping of failures to exit codes.

Exit codes (documented in `kvctl --help`):
  0 ok · 1 other error · 2 bad input/usage · 3 cluster unreachable/unavailable
  4 not found · 5 precondition failed (txn guard, not leader, learner state...)

Must never: print a traceback for an expected failure; every ClientError is
one "Error: ..." line on stderr.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import click
import grpc

from kvstore.client import Client, ClientTLS, errors

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NOT_FOUND = 4
EXIT_PRECONDITION = 5


class KvctlError(click.ClickException):
    """A failure reported as one line with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_OTHER) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"Error: {self.format_message()}", err=True)


def exit_code_for(err: errors.ClientError) -> int:
    if isinstance(
        err, (errors.ConnectionFailedError, errors.UnavailableError, errors.DeadlineExceededError)
    ):
        return EXIT_UNAVAILABLE
    if err.code == grpc.StatusCode.NOT_FOUND:
        return EXIT_NOT_FOUND
    if err.code == grpc.StatusCode.FAILED_PRECONDITION:
        return EXIT_PRECONDITION
    if err.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return EXIT_USAGE
    if err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EXIT_UNAVAILABLE
    return EXIT_OTHER


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: str | float) -> float:
    """Go-style durations as etcdctl takes them ("2s", "500ms", "1m") or seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise click.BadParameter(f"invalid duration {value!r} (e.g. 2s, 500ms, 1m)")
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]


def parse_hex_id(value: str, what: str = "ID") -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise KvctlError(f"bad {what} {value!r} (expected hexadecimal)", EXIT_USAGE) from None


@dataclass
class Settings:
    endpoints: list[str]
    write_out: str = "simple"
    dial_timeout: float = 2.0
    command_timeout: float = 5.0
    tls: ClientTLS | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(
                self.endpoints,
                dial_timeout=self.dial_timeout,
                command_timeout=self.command_timeout,
                tls=self.tls,
                user=self.user,
                password=self.password,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


pass_settings = click.make_pass_decorator(Settings)
