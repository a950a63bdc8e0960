#!/usr/bin/env bash
# bench/ab.sh — two Floodgate builds against each other on the plain proxy path: the same
# nginx origin, the same wrk load, run interleaved round by round, so a code change can be
# told from the machine's drift. Prints each round and the median of each build.
#
# Usage: bench/ab.sh OLD_BINARY NEW_BINARY
#   e.g. git worktree add /tmp/old HEAD~1 && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target
#        cargo build --release --bin floodgate) && cargo build --release &&
#        bench/ab.sh /tmp/old-target/release/floodgate target/release/floodgate
# Knobs: DUR=8 REPS=3 CONNS=64 WRK_THREADS=2 WORKERS=1
# Needs (Debian): nginx wrk python3. Traffic stays on 127.0.0.1:19001 and 19030-19039.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 2 ] || { echo "usage: bench/ab.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
OLD=$(realpath "$1") NEW=$(realpath "$2")
DUR=${DUR:-8}
source "$HERE/lib.sh" ab nginx wrk python3
ports_free 19001 19030 19039

nginx_conf origin 1 "    server { listen 127.0.0.1:19001 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
wait_port 19001

printf 'case\trep\trps\tp50_ms\tp99_ms\tnon2xx\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for which in old new; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    start "fg_${which}_$rep" env BENCH_WORKERS="$WORKERS" "$bin" run -c "$HERE/floodgate.yaml"
    pid=${PIDS[-1]}
    wait_port 19030
    measure "$which" http://127.0.0.1:19030/
    kill -TERM "$pid"; wait "$pid" 2> /dev/null || true
    while (exec 3<> /dev/tcp/127.0.0.1/19030) 2> /dev/null; do sleep 0.05; done
  done
done

PYTHONPATH=$HERE python3 - "$RESULTS" << PY
import sys
from results import Results
res = Results(sys.argv[1])
print("| build | req/s median | p50 ms | p99 ms | non-2xx | paired ratio to old |")
print("|---|---|---|---|---|---|")
print(res.row("old: $OLD", "old", "1.00"))
print(res.row("new: $NEW", "new", f"{res.paired('new', 'old'):.3f}"))
print(f"\nSettings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS} WORKERS=${WORKERS}.")
PY
