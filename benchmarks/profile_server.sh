#!/usr/bin/env bash
# Profile a running kvstore node (or any Python process) with py-spy.
#
# Owns: resolving the real Python pid and running one bounded py-spy command.
# Never: kills or signals the target; never runs longer than the given seconds.
#
# usage:
#   benchmarks/profile_server.sh record PID [SECONDS=10] [OUT=profile-PID.svg]  # flamegraph
#   benchmarks/profile_server.sh native PID [SECONDS=10] [OUT=profile-PID.svg]  # + C frames (grpc, rocksdb)
#   benchmarks/profile_server.sh top    PID [SECONDS=10]                # live top (needs a tty)
#   benchmarks/profile_server.sh dump   PID                                     # one stack dump
#   benchmarks/profile_server.sh summary PID [SECONDS=10]                       # text: hottest frames
#
# Typical loop: start a cluster, start load, profile the leader while the load runs:
#   python -m kvstore.devcluster up --dir .cluster      # prints member pids
#   python benchmarks/kv_bench.py --endpoints <eps> --workloads put --clients 64 --duration 30 &
#   benchmarks/profile_server.sh record <leader pid> 10 put64.svg
#
# Notes:
# - `pip install py-spy` (0.4.x works here; the sandbox allows ptrace of own processes).
# - Pass the pid of the python interpreter itself. A pid from `python ... &` in an
#   interactive shell can be a wrapper (pyenv shim -> "Failed to find python version");
#   this script then profiles the wrapper's single python child instead.
# - `record`/`summary` use --nonblocking (the target is not paused while sampled, so
#   the load is barely disturbed). `native` must pause the target at every sample and
#   slows it by ~20-30 %: use it to see where C time goes, not for throughput.
# - Sampling rate 100 Hz; `--idle` is off, so only frames that were running show up.
set -euo pipefail

mode="${1:-}"
pid="${2:-}"
secs="${3:-10}"
if [[ -z "$mode" || -z "$pid" ]]; then
  sed -n '2,14p' "$0"
  exit 2
fi
command -v py-spy >/dev/null || { echo "py-spy not installed: pip install py-spy" >&2; exit 2; }

is_python() { readlink "/proc/$1/exe" 2>/dev/null | grep -q 'python'; }
if ! is_python "$pid"; then
  child="$(pgrep -P "$pid" | head -n 1 || true)"
  if [[ -n "$child" ]] && is_python "$child"; then
    echo "pid $pid is not a python interpreter; using its child $child" >&2
    pid="$child"
  else
    echo "pid $pid is not a python interpreter (exe: $(readlink "/proc/$pid/exe" || echo '?'))" >&2
    exit 2
  fi
fi

case "$mode" in
  record)
    out="${4:-profile-$pid.svg}"
    timeout $((secs + 30)) py-spy record --nonblocking -r 100 -d "$secs" -o "$out" --pid "$pid"
    echo "flamegraph: $out"
    ;;
  native)
    out="${4:-profile-$pid.svg}"
    timeout $((secs + 30)) py-spy record --native -r 100 -d "$secs" -o "$out" --pid "$pid"
    echo "flamegraph: $out"
    ;;
  top)
    # py-spy top is interactive and unbounded: bound it, and it needs a terminal.
    if [[ -t 1 ]]; then
      timeout --foreground "$secs" py-spy top --nonblocking --pid "$pid" || true
    else
      echo "py-spy top needs a terminal; use: $0 summary $pid $secs" >&2
      exit 2
    fi
    ;;
  dump)
    timeout 30 py-spy dump --pid "$pid"
    ;;
  summary)
    raw="$(mktemp /tmp/pyspy-XXXXXX.txt)"
    timeout $((secs + 30)) py-spy record --nonblocking -r 100 -d "$secs" --format raw -o "$raw" \
      --pid "$pid" >/dev/null
    python3 - "$raw" <<'EOF'
import collections
import sys

inclusive, leaf, total = collections.Counter(), collections.Counter(), 0
with open(sys.argv[1]) as f:
    for line in f:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        n = int(n)
        total += n
        frames = stack.split(";")
        leaf[frames[-1]] += n
        for fr in set(frames):
            inclusive[fr] += n
print(f"{total} samples")
print("-- inclusive (frame or its callees on CPU)")
for fr, n in inclusive.most_common(30):
    print(f"{100 * n / max(total, 1):5.1f}%  {fr}")
print("-- self (frame itself on CPU)")
for fr, n in leaf.most_common(20):
    print(f"{100 * n / max(total, 1):5.1f}%  {fr}")
EOF
    rm -f "$raw"
    ;;
  *)
    echo "unknown mode $mode (record|native|top|dump|summary)" >&2
    exit 2
    ;;
esac
