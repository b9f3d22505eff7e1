#!/usr/bin/env bash
# test_lower_bounds.sh — check that pyproject.toml's lower bounds are true.
#
# Resolves every direct dependency (runtime and dev) at the LOWEST version its
# range allows (`uv pip compile --resolution lowest-direct`), installs that set
# into a throwaway venv, and runs the default test suite there. Run it when a
# lower bound changes (`make test-lower-bounds`); the figures of the last run are
# in the issue notes. Needs the registry (it resolves on the day, unlike `make`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON="${PYTHON:-python3}"
UV="${UV:-$ROOT/.venv/bin/uv}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-lowest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

"$UV" pip compile -q --python-version 3.11 --resolution lowest-direct \
    "$ROOT/pyproject.toml" --extra dev -o "$WORK/lowest.txt"
echo "lower bounds resolved to:"
grep -E '^[A-Za-z]' "$WORK/lowest.txt" | sed 's/^/  /'
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$WORK/lowest.txt"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
"$WORK/venv/bin/python" -m pip check
cd "$ROOT"
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
