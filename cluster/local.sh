#!/bin/sh
# Local three-node kvstore cluster: cluster/local.sh up|down|status [--size N] [--dir DIR]
# Wraps `python -m kvstore.devcluster`; data, logs and pids go in .cluster/ by default.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
cmd="${1:-status}"
[ $# -gt 0 ] && shift
case "$cmd" in
  up|down|status) exec "$PYTHON" -m kvstore.devcluster "$cmd" "$@" ;;
  *) echo "usage: $0 up|down|status [--size N] [--dir DIR]" >&2; exit 2 ;;
esac
