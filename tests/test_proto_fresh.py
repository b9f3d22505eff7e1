"""The generated kvstore/pb/ package matches the .proto sources and etcd's field tables.

Owns: the staleness check (scripts/gen_proto.py --check) and a cross-check of
every field in ETCD_API.md §1.7 (number, type, label, oneof) against the
generated descriptors. Never regenerates anything in the working tree.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from kvstore.pb import auth_pb2, kv_pb2, rpc_pb2, v3election_pb2, v3lock_pb2

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT.parent / "shared" / "ETCD_API.md"

_SCALARS = {"int64", "uint64", "bytes", "string", "bool", "uint32"}


def _gen_proto_module():  # noqa: ANN202 - a script, loaded by path
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_pb(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(ROOT / "kvstore" / "pb", target)
    return target


def test_staleness_ignores_only_the_generator_version_stamps(tmp_path: Path) -> None:
    gen = _gen_proto_module()
    committed = ROOT / "kvstore" / "pb"
    newer = _copy_pb(tmp_path, "newer-generator")
    grpc_file, pb_file = newer / "kv_pb2_grpc.py", newer / "kv_pb2.py"
    text = grpc_file.read_text()
    stamped = re.sub(r"GRPC_GENERATED_VERSION = '[^']*'", "GRPC_GENERATED_VERSION = '9.9.9'", text)
    assert stamped != text
    grpc_file.write_text(stamped)
    text = pb_file.read_text()
    stamped = re.sub(r"Protobuf Python Version: \S+", "Protobuf Python Version: 9.1.2", text)
    stamped = re.sub(r"(Domain\.PUBLIC,\s*)\d+,\s*\d+,\s*\d+,", r"\g<1>9, 1, 2,", stamped)
    assert stamped != text
    pb_file.write_text(stamped)
    assert gen.stale_files(newer, committed) == []

    edited = _copy_pb(tmp_path, "proto-changed")
    pyi = edited / "rpc_pb2.pyi"
    pyi.write_text(pyi.read_text().replace("class PutRequest", "class PutRequest2", 1))
    (edited / "kv_pb2.py").write_bytes((committed / "kv_pb2.py").read_bytes() + b"\nX = 1\n")
    assert gen.stale_files(edited, committed) == ["kv_pb2.py", "rpc_pb2.pyi"]

    missing = _copy_pb(tmp_path, "proto-added")
    (missing / "extra_pb2.py").write_text("")
    assert gen.stale_files(missing, committed) == ["extra_pb2.py"]


def test_generated_code_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _field_rows(text: str) -> list[tuple[str, str, int, str, str, str]]:
    """(package, message, number, name, type, label) rows of the §1.7 tables."""
    section = text[text.index("### 1.7") : text.index("#### grpc.health.v1")]
    rows = []
    package = ""
    for line in section.splitlines():
        heading = re.match(r"#### (\w+)", line)
        if heading:
            package = heading.group(1)
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[1].isdigit():
            rows.append((package, cells[0], int(cells[1]), cells[2], cells[3], cells[4]))
    return rows


@pytest.mark.skipif(not API_DOC.exists(), reason="shared ETCD_API.md not present")
def test_fields_match_etcd_api_tables() -> None:
    # Importing the modules registers their descriptors in the default pool.
    assert {m.DESCRIPTOR.package for m in (kv_pb2, auth_pb2, rpc_pb2, v3lock_pb2, v3election_pb2)}
    pool = descriptor_pool.Default()
    rows = _field_rows(API_DOC.read_text())
    assert len(rows) > 200
    seen: dict[str, set[str]] = {}
    for package, message, number, name, type_name, label in rows:
        desc = pool.FindMessageTypeByName(f"{package}.{message}")
        field = desc.fields_by_name.get(name)
        assert field is not None, f"{package}.{message}.{name} missing"
        assert field.number == number, f"{message}.{name}: {field.number} != {number}"
        if type_name in _SCALARS:
            assert field.message_type is None and field.enum_type is None
            assert field.type == _scalar_type(type_name), f"{message}.{name} type"
        else:
            composite = field.message_type or field.enum_type
            assert composite is not None, f"{message}.{name} should be {type_name}"
            assert composite.full_name.endswith(type_name.split(".")[-1]), f"{message}.{name}"
        assert field.is_repeated == (label == "repeated"), f"{message}.{name} label"
        if label.startswith("oneof:"):
            assert field.containing_oneof is not None
            assert field.containing_oneof.name == label.removeprefix("oneof:")
        seen.setdefault(desc.full_name, set()).add(name)
    for full_name, names in seen.items():
        declared = set(pool.FindMessageTypeByName(full_name).fields_by_name)
        assert declared == names, f"{full_name} has extra fields {declared - names}"


def _scalar_type(name: str) -> int:
    from google.protobuf.descriptor import FieldDescriptor as FD

    return {
        "int64": FD.TYPE_INT64,
        "uint64": FD.TYPE_UINT64,
        "bytes": FD.TYPE_BYTES,
        "string": FD.TYPE_STRING,
        "bool": FD.TYPE_BOOL,
        "uint32": FD.TYPE_UINT32,
    }[name]


def test_services_have_every_method() -> None:
    services = {
        s.full_name: {m.name for m in s.methods}
        for mod in (rpc_pb2, v3lock_pb2, v3election_pb2)
        for s in mod.DESCRIPTOR.services_by_name.values()
    }
    assert services["etcdserverpb.KV"] == {"Range", "Put", "DeleteRange", "Txn", "Compact"}
    assert services["etcdserverpb.Watch"] == {"Watch"}
    assert services["etcdserverpb.Lease"] == {
        "LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive", "LeaseLeases",
    }
    assert services["etcdserverpb.Cluster"] == {
        "MemberAdd", "MemberRemove", "MemberUpdate", "MemberList", "MemberPromote",
    }
    assert services["etcdserverpb.Maintenance"] == {
        "Alarm", "Status", "Defragment", "Hash", "HashKV", "Snapshot", "MoveLeader", "Downgrade",
    }
    assert len(services["etcdserverpb.Auth"]) == 17
    assert services["v3lockpb.Lock"] == {"Lock", "Unlock"}
    assert services["v3electionpb.Election"] == {
        "Campaign", "Proclaim", "Leader", "Observe", "Resign",
    }
    watch = rpc_pb2.DESCRIPTOR.services_by_name["Watch"].methods_by_name["Watch"]
    assert watch.client_streaming and watch.server_streaming
