#!/usr/bin/env bash
# build.sh — build the kvstore image without a container registry.
#
# 1. the base image: scripts/docker/build-base.sh (debootstrap; cached by tag);
# 2. the project's wheels, built on the host: the locked dependencies
#    (requirements/runtime.txt, hashes checked: grpcio, rocksdict, ... as cp311
#    manylinux wheels, which fit Debian bookworm's Python 3.11) and kvstore itself,
#    built by the locked backend (requirements/build.txt) in a throwaway venv;
# 3. `docker build --build-arg BASE_IMAGE=<base> --build-arg OFFLINE_WHEELS=1`:
#    the image installs from those wheels only (pip --no-index), no network.
#
# Everything is staged in a temporary build context, so the work tree is never
# written to and two builds can run at once.
#
# Environment:
#   KVSTORE_IMAGE       tag to produce        (default kvstore:latest)
#   KVSTORE_BASE_IMAGE  base image tag        (default kvstore-base:bookworm)
#   KVSTORE_SKIP_BASE   1 = do not run build-base.sh (the base tag must exist,
#                       e.g. KVSTORE_BASE_IMAGE=python:3.11-slim where it can be pulled)
#   PYTHON              host Python 3.11 that builds the wheels (default python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TAG="${KVSTORE_IMAGE:-kvstore:latest}"
BASE="${KVSTORE_BASE_IMAGE:-kvstore-base:bookworm}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "build: $PYTHON is not Python 3.11; the wheels must match the image's Python 3.11" >&2
    exit 1
fi

t0=$(date +%s)
if [[ "${KVSTORE_SKIP_BASE:-0}" != 1 ]]; then
    KVSTORE_BASE_IMAGE="$BASE" "$ROOT/scripts/docker/build-base.sh"
fi
t1=$(date +%s)

CTX=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
# Only what the package build needs (mirrors the .dockerignore allow-list).
cp "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/.dockerignore" "$CTX/"
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' -c kvstore requirements | tar -C "$CTX" -x

echo "build: pip wheel (locked) -> $CTX/wheels"
"$PYTHON" -m venv "$CTX/.buildenv"
BPIP=("$CTX/.buildenv/bin/python" -m pip --disable-pip-version-check)
"${BPIP[@]}" install --quiet --require-hashes --no-deps -r "$ROOT/requirements/build.txt"
"${BPIP[@]}" wheel --quiet --require-hashes --no-deps -r "$ROOT/requirements/runtime.txt" \
    -w "$CTX/wheels"
"${BPIP[@]}" wheel --quiet --no-deps --no-build-isolation "$CTX" -w "$CTX/wheels"
rm -rf "$CTX/.buildenv" "$CTX/build" "$CTX"/*.egg-info
t2=$(date +%s)

echo "build: docker build -t $TAG (BASE_IMAGE=$BASE, offline wheels)"
docker build -f "$ROOT/Dockerfile" -t "$TAG" \
    --build-arg BASE_IMAGE="$BASE" --build-arg OFFLINE_WHEELS=1 "$CTX"
t3=$(date +%s)

echo "build: $TAG ready (base $((t1 - t0))s, wheels $((t2 - t1))s, image $((t3 - t2))s)"
docker image ls "$TAG"
