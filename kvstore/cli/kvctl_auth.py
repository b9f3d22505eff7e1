"""`kvctl user|role|auth`: etcdctl 3.4's authentication commands, same output.

Owns: argument handling of the user / role / auth command groups (password
prompts and --interactive=false stdin reading, --no-password,
--new-user-password, permission types and --prefix / --from-key ranges) and
their `simple` and `json` output, byte for byte as etcdctl 3.4.23 prints them
(compared in tests/cli/test_kvctl_auth_compat.py against a real etcd).
Never: prints a password; talks to the cluster except through kvstore.client.

etcdctl behaviours kept: `auth enable` creates the root role and grants it to
root when the server answers "root user does not have root role"; a key ""
with --from-key means every key ("\\x00"); `user get --detail` prints each
role's permissions after a blank line; table output is refused.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from kvstore.cli.kvctl_common import EXIT_USAGE, KvctlError, Settings, pass_settings
from kvstore.client import PermissionType, errors
from kvstore.client.auth import AuthResult, NameList, Permission, RoleInfo, UserInfo
from kvstore.client.ops import prefix_end
from kvstore.client.types import Header


def _check_format(s: Settings) -> None:
    if s.write_out not in ("simple", "json"):
        raise KvctlError(f"{s.write_out} not supported as output format", EXIT_USAGE)


def _header_json(h: Header) -> dict[str, int]:
    out = {
        "cluster_id": h.cluster_id,
        "member_id": h.member_id,
        "revision": h.revision,
        "raft_term": h.raft_term,
    }
    return {k: v for k, v in out.items() if v}


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def _perm_json(p: Permission) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.perm_type:
        out["permType"] = int(p.perm_type)
    if p.key:
        out["key"] = _b64(p.key)
    if p.range_end:
        out["range_end"] = _b64(p.range_end)
    return out


def _emit_json(result: AuthResult | UserInfo | RoleInfo | NameList, field: str = "") -> None:
    """etcdctl's JSON printer: the response message, zero values left out."""
    out: dict[str, Any] = {"header": _header_json(result.header)}
    if isinstance(result, UserInfo) and result.roles:
        out["roles"] = list(result.roles)
    elif isinstance(result, RoleInfo) and result.perms:
        out["perm"] = [_perm_json(p) for p in result.perms]
    elif isinstance(result, NameList) and result.names:
        out[field] = list(result.names)
    click.echo(json.dumps(out, separators=(",", ":")))


def _done(s: Settings, result: AuthResult, line: str) -> None:
    if s.write_out == "json":
        _emit_json(result)
    else:
        click.echo(line)


def _read_password(prompt: str, interactive: bool, confirm: bool = True) -> str:
    """etcdctl's readPasswordInteractive / stdin line (--interactive=false)."""
    if not interactive:
        # etcdctl: fmt.Scanf("%s", &password): the first whitespace-free word.
        words = sys.stdin.readline().split()
        return words[0] if words else ""
    first = click.prompt(prompt, hide_input=True, default="", show_default=False, err=True)
    if not confirm:
        return first
    again = click.prompt(
        f"Type {prompt[0].lower()}{prompt[1:]} again for confirmation",
        hide_input=True, default="", show_default=False, err=True,
    )  # fmt: skip
    if first != again:
        raise KvctlError("given passwords are different", EXIT_USAGE)
    return first


# ------------------------------------------------------------------ user


@click.group("user")
def user_group() -> None:
    """User related commands."""


@user_group.command("add")
@click.argument("name_password", required=False)
@click.argument("extra", nargs=-1)
@click.option("--interactive", type=bool, default=True, help="read the password from a terminal")
@click.option("--new-user-password", default="", help="supply the password on the command line")
@click.option("--no-password", is_flag=True, help="a user without password (CN based auth only)")
@pass_settings
def user_add(
    s: Settings,
    name_password: str | None,
    extra: tuple[str, ...],
    interactive: bool,
    new_user_password: str,
    no_password: bool,
) -> None:
    """Add a new user (NAME or NAME:PASSWORD)."""
    _check_format(s)
    if name_password is None or extra:
        raise KvctlError("user add command requires user name as its argument", EXIT_USAGE)
    name, sep, password = name_password.partition(":")
    if sep:
        if not name:
            raise KvctlError("empty user name is not allowed", EXIT_USAGE)
    elif not no_password:
        password = new_user_password or _read_password(f"Password of {name}", interactive)
    r = s.client().user_add(name, password, no_password=no_password)
    _done(s, r, f"User {name} created")


@user_group.command("get")
@click.argument("name", required=False)
@click.option("--detail", is_flag=True, help="show permissions of roles granted to the user")
@pass_settings
def user_get(s: Settings, name: str | None, detail: bool) -> None:
    """Get detailed information of a user."""
    _check_format(s)
    if name is None:
        raise KvctlError("user get command requires user name as its argument", EXIT_USAGE)
    client = s.client()
    r = client.user_get(name)
    if detail:
        click.echo(f"User: {name}")
        for role in r.roles:
            click.echo("")
            _print_role(role, client.role_get(role), s)
        return
    if s.write_out == "json":
        _emit_json(r)
        return
    click.echo(f"User: {name}")
    click.echo("Roles:" + "".join(f" {role}" for role in r.roles))


@user_group.command("list")
@pass_settings
def user_list(s: Settings) -> None:
    """List up all users."""
    _check_format(s)
    r = s.client().user_list()
    if s.write_out == "json":
        _emit_json(r, "users")
    else:
        for name in r.names:
            click.echo(name)


@user_group.command("delete")
@click.argument("name", required=False)
@pass_settings
def user_delete(s: Settings, name: str | None) -> None:
    """Delete a user."""
    _check_format(s)
    if name is None:
        raise KvctlError("user delete command requires user name as its argument", EXIT_USAGE)
    _done(s, s.client().user_delete(name), f"User {name} deleted")


@user_group.command("passwd")
@click.argument("name", required=False)
@click.option("--interactive", type=bool, default=True, help="read the password from a terminal")
@pass_settings
def user_passwd(s: Settings, name: str | None, interactive: bool) -> None:
    """Change the password of a user."""
    _check_format(s)
    if name is None:
        raise KvctlError("user passwd command requires user name as its argument", EXIT_USAGE)
    password = _read_password(f"Password of {name}", interactive)
    _done(s, s.client().user_change_password(name, password), "Password updated")


@user_group.command("grant-role")
@click.argument("args", nargs=-1)
@pass_settings
def user_grant_role(s: Settings, args: tuple[str, ...]) -> None:
    """Grant a role to a user (NAME ROLE)."""
    _check_format(s)
    if len(args) != 2:
        raise KvctlError(
            "user grant command requires user name and role name as its argument", EXIT_USAGE
        )
    name, role = args
    _done(s, s.client().user_grant_role(name, role), f"Role {role} is granted to user {name}")


@user_group.command("revoke-role")
@click.argument("args", nargs=-1)
@pass_settings
def user_revoke_role(s: Settings, args: tuple[str, ...]) -> None:
    """Revoke a role from a user (NAME ROLE)."""
    _check_format(s)
    if len(args) != 2:
        raise KvctlError(
            "user revoke-role requires user name and role name as its argument", EXIT_USAGE
        )
    name, role = args
    _done(s, s.client().user_revoke_role(name, role), f"Role {role} is revoked from user {name}")


# ------------------------------------------------------------------ role


@click.group("role")
def role_group() -> None:
    """Role related commands."""


@role_group.command("add")
@click.argument("args", nargs=-1)
@pass_settings
def role_add(s: Settings, args: tuple[str, ...]) -> None:
    """Add a new role."""
    _check_format(s)
    if len(args) != 1:
        raise KvctlError("role add command requires role name as its argument", EXIT_USAGE)
    _done(s, s.client().role_add(args[0]), f"Role {args[0]} created")


@role_group.command("delete")
@click.argument("args", nargs=-1)
@pass_settings
def role_delete(s: Settings, args: tuple[str, ...]) -> None:
    """Delete a role."""
    _check_format(s)
    if len(args) != 1:
        raise KvctlError("role delete command requires role name as its argument", EXIT_USAGE)
    _done(s, s.client().role_delete(args[0]), f"Role {args[0]} deleted")


def _print_role(name: str, r: RoleInfo, s: Settings) -> None:
    if s.write_out == "json":
        _emit_json(r)
        return
    click.echo(f"Role {name}")
    for title, kinds in (
        ("KV Read:", (PermissionType.READ, PermissionType.READWRITE)),
        ("KV Write:", (PermissionType.WRITE, PermissionType.READWRITE)),
    ):
        click.echo(title)
        for p in r.perms:
            if p.perm_type in kinds:
                click.echo(_perm_line(p))


def _perm_line(p: Permission) -> str:
    key = p.key.decode("utf-8", "replace")
    if not p.range_end:
        return f"\t{key}"
    if p.range_end != b"\x00":
        line = f"\t[{key}, {p.range_end.decode('utf-8', 'replace')})"
    else:
        line = f"\t[{key}, <open ended>"
    if prefix_end(p.key) == p.range_end:
        line += f" (prefix {key})"
    return line


@role_group.command("get")
@click.argument("args", nargs=-1)
@pass_settings
def role_get(s: Settings, args: tuple[str, ...]) -> None:
    """Get detailed information of a role."""
    _check_format(s)
    if len(args) != 1:
        raise KvctlError("role get command requires role name as its argument", EXIT_USAGE)
    _print_role(args[0], s.client().role_get(args[0]), s)


@role_group.command("list")
@pass_settings
def role_list(s: Settings) -> None:
    """List up all roles."""
    _check_format(s)
    r = s.client().role_list()
    if s.write_out == "json":
        _emit_json(r, "roles")
    else:
        for name in r.names:
            click.echo(name)


def _perm_range(args: tuple[str, ...], prefix: bool, from_key: bool) -> tuple[str, str]:
    """(key, range_end) from KEY [ENDKEY] and the flags (etcdctl permRange)."""
    key = args[0]
    if len(args) == 1:
        if prefix:
            if from_key:
                raise KvctlError("--from-key and --prefix flags are mutually exclusive", EXIT_USAGE)
            end = prefix_end(key.encode()).decode("latin-1")
        elif from_key:
            end = "\x00"
        else:
            end = ""
    else:
        if prefix:
            raise KvctlError("unexpected endkey argument with --prefix flag", EXIT_USAGE)
        if from_key:
            raise KvctlError("unexpected endkey argument with --from-key flag", EXIT_USAGE)
        end = args[1]
    if key == "" and end == "\x00":
        key = "\x00"  # every key
    return key, end


def _encode(text: str) -> bytes:
    # prefix_end of a non-ASCII key may not be UTF-8: latin-1 round-trips it.
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("latin-1")


@role_group.command("grant-permission")
@click.argument("args", nargs=-1)
@click.option("--prefix", is_flag=True, help="grant a prefix permission")
@click.option("--from-key", is_flag=True, help="grant a permission of keys >= the given key")
@pass_settings
def role_grant_permission(s: Settings, args: tuple[str, ...], prefix: bool, from_key: bool) -> None:
    """Grant a key to a role (ROLE read|write|readwrite KEY [ENDKEY])."""
    _check_format(s)
    if len(args) < 3 or len(args) > 4:
        raise KvctlError(
            "role grant command requires role name, permission type, and key [endkey] "
            "as its argument",
            EXIT_USAGE,
        )
    role, kind = args[0], args[1]
    try:
        perm_type = PermissionType[kind.upper()]
    except KeyError:
        raise KvctlError(f"invalid permission type: {kind}", EXIT_USAGE) from None
    key, end = _perm_range(args[2:], prefix, from_key)
    r = s.client().role_grant_permission(role, perm_type, _encode(key), _encode(end))
    _done(s, r, f"Role {role} updated")


@role_group.command("revoke-permission")
@click.argument("args", nargs=-1)
@click.option("--prefix", is_flag=True, help="revoke a prefix permission")
@click.option("--from-key", is_flag=True, help="revoke a permission of keys >= the given key")
@pass_settings
def role_revoke_permission(
    s: Settings, args: tuple[str, ...], prefix: bool, from_key: bool
) -> None:
    """Revoke a key from a role (ROLE KEY [ENDKEY])."""
    _check_format(s)
    if len(args) < 2 or len(args) > 3:
        raise KvctlError(
            "role revoke-permission command requires role name and key [endkey] as its argument",
            EXIT_USAGE,
        )
    role = args[0]
    key, end = _perm_range(args[1:], prefix, from_key)
    r = s.client().role_revoke_permission(role, _encode(key), _encode(end))
    key = args[1]  # etcdctl prints the key as given ("" rather than "\x00")
    if s.write_out == "json":
        _emit_json(r)
    elif not end:
        click.echo(f"Permission of key {key} is revoked from role {role}")
    elif end != "\x00":
        click.echo(f"Permission of range [{key}, {end}) is revoked from role {role}")
    else:
        click.echo(f"Permission of range [{key}, <open ended> is revoked from role {role}")


# ------------------------------------------------------------------ auth


@click.group("auth")
def auth_group() -> None:
    """Enable or disable authentication."""


@auth_group.command("enable")
@pass_settings
def auth_enable(s: Settings) -> None:
    """Enable authentication (creating the root role for root if needed)."""
    client = s.client()
    for _ in range(2):
        try:
            client.auth_enable()
            break
        except errors.ClientError as err:
            if err.message != "etcdserver: root user does not have root role":
                raise
            client.role_add("root")
            client.user_grant_role("root", "root")
    else:
        client.auth_enable()
    click.echo("Authentication Enabled")


@auth_group.command("disable")
@pass_settings
def auth_disable(s: Settings) -> None:
    """Disable authentication."""
    s.client().auth_disable()
    click.echo("Authentication Disabled")


COMMANDS = [user_group, role_group, auth_group]
