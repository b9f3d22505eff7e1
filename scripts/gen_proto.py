#!/usr/bin/env python3
"""Generate kvstore/pb/ from proto/kvstore/pb/*.proto (the only producer of kvstore/pb).

Owns: running grpc_tools.protoc over every .proto under proto/kvstore/pb/ with
`-Iproto`, so generated modules import each other as `from kvstore.pb import X_pb2`,
and writing kvstore/pb/__init__.py with the generated-code notice.
Never: edits generated files by hand or touches anything outside kvstore/pb/.
Invariant: kvstore/pb/ holds exactly the outputs of the current protos
(stale `*_pb2*` files of deleted protos are removed).

The check compares the generated code with the generator's version stamps masked
(`GRPC_GENERATED_VERSION`, the protobuf gencode version and its runtime check), so
it fails when a .proto changed and the stubs were not regenerated, not when a newer
grpcio-tools is installed. Regeneration uses the grpcio-tools that requirements/
pins (the one that made the committed stubs, whose stamps set pyproject's lower
bounds for grpcio and protobuf).

Usage:
    python scripts/gen_proto.py          # regenerate kvstore/pb/
    python scripts/gen_proto.py --check  # exit 1 if kvstore/pb/ is stale
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_DIR = PROTO_ROOT / "kvstore" / "pb"
OUT_PKG = ROOT / "kvstore" / "pb"

INIT_TEXT = '''"""Generated protobuf / gRPC modules for kvstore (etcd v3 API + internal messages).

GENERATED CODE -- DO NOT EDIT. Sources: proto/kvstore/pb/*.proto.
Regenerate with `python scripts/gen_proto.py`; tests/test_proto_fresh.py fails when stale.
Import as `from kvstore.pb import rpc_pb2, rpc_pb2_grpc, kv_pb2`.
"""
'''

_GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def _is_generated(name: str) -> bool:
    return name == "__init__.py" or name.endswith(_GENERATED_SUFFIXES)


def generate(out_root: Path) -> Path:
    """Run protoc over every proto into `out_root`; return the generated pb package dir."""
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_DIR}")
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--pyi_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    pkg = out_root / "kvstore" / "pb"
    (pkg / "__init__.py").write_text(INIT_TEXT)
    return pkg


def _generated_names(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.name for p in directory.iterdir() if p.is_file() and _is_generated(p.name)}


# The generator's version stamps: the only lines that change with the tool's release
# rather than with the .proto sources.
_STAMPS = (
    re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M),
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(
        r"_runtime_version\.ValidateProtobufRuntimeVersion\(\s*"
        r"_runtime_version\.Domain\.PUBLIC,\s*\d+,\s*\d+,\s*\d+,\s*'[^']*',"
    ),
)


def normalised(text: str) -> str:
    """`text` with the generator's version stamps masked."""
    for stamp in _STAMPS:
        text = stamp.sub("<generator version>", text)
    return text


def stale_files(fresh: Path, current: Path) -> list[str]:
    """Names whose content (stamps masked) differs between a fresh generation and the package."""
    want, have = _generated_names(fresh), _generated_names(current)
    diffs = sorted(want ^ have)
    for name in sorted(want & have):
        new, old = (d / name for d in (fresh, current))
        if normalised(new.read_text()) != normalised(old.read_text()):
            diffs.append(name)
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if kvstore/pb is stale")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvstore-pb-") as tmp:
        fresh = generate(Path(tmp))
        diffs = stale_files(fresh, OUT_PKG)
        if opts.check:
            if diffs:
                print("kvstore/pb is stale; run python scripts/gen_proto.py:", *diffs, sep="\n  ")
                return 1
            print("kvstore/pb is up to date")
            return 0
        OUT_PKG.mkdir(parents=True, exist_ok=True)
        for name in _generated_names(OUT_PKG) - _generated_names(fresh):
            (OUT_PKG / name).unlink()
        for name in sorted(_generated_names(fresh)):
            (OUT_PKG / name).write_bytes((fresh / name).read_bytes())
        print(f"generated {len(_generated_names(fresh))} files in {OUT_PKG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
