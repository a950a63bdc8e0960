#!/usr/bin/env bash
# bench/instructions.sh — CPU instructions Floodgate spends per proxied request, counted by
# callgrind. Unlike req/s, the count does not move with whatever else the machine is doing,
# so it tells a small change in the request path from noise; it does not see the kernel
# (socket work) or how fast the instructions run (cache misses), so confirm a gain with
# bench/ab.sh. Each binary runs under valgrind in front of an nginx origin (the same one
# bench/proxy.sh uses, one worker, bench/floodgate.yaml); wrk warms it up, the counters are
# zeroed, then DUR seconds of load are counted and divided by the requests wrk completed.
#
# Usage: cargo build --release && bench/instructions.sh [BINARY...]   (default: this build)
# Knobs: DUR=10 CONNS=16 TOP=0 (TOP=n also prints the n costliest functions, inclusive)
# Needs (Debian): valgrind nginx wrk. Traffic stays on 127.0.0.1:19001, 19030 and 19039.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONNS=${CONNS:-16}
source "$HERE/lib.sh" instructions valgrind callgrind_control callgrind_annotate nginx wrk
ports_free 19001 19030 19039
[ $# -gt 0 ] || set -- "$BIN"
TOP=${TOP:-0}

nginx_conf origin 1 "    server { listen 127.0.0.1:19001 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
wait_port 19001

printf '| build | requests counted | instructions per request |\n|---|---|---|\n' > "$WORK/table"
n=0
for bin in "$@"; do
  n=$((n + 1))
  out=$WORK/callgrind.$n
  start "floodgate$n" env BENCH_WORKERS=1 valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$(realpath "$bin")" run -c "$HERE/floodgate.yaml"
  pid_var=PID_floodgate$n
  # valgrind starts slowly: allow a minute for the listener.
  for _ in $(seq 1 600); do (exec 3<> /dev/tcp/127.0.0.1/19030) 2> /dev/null && break; sleep 0.1; done
  wrk -t1 -c"$CONNS" -d3s http://127.0.0.1:19030/ > /dev/null
  callgrind_control -z "${!pid_var}" > /dev/null 2>&1
  requests=$(wrk -t1 -c"$CONNS" -d"${DUR}s" http://127.0.0.1:19030/ | awk '/requests in/ {print $1}')
  callgrind_control -d "${!pid_var}" > /dev/null 2>&1
  kill -TERM "${!pid_var}"
  wait "${!pid_var}" 2> /dev/null || true
  total=$(awk '/^summary:/ {print $2}' "$out.1")
  per=$(awk -v t="$total" -v r="$requests" 'BEGIN { printf "%\047.0f", t / r }')
  log "$bin: $requests requests, $per instructions each"
  printf '| %s | %s | %s |\n' "$bin" "$requests" "$per" >> "$WORK/table"
  if [ "$TOP" -gt 0 ]; then
    echo "== $bin: costliest functions, inclusive, instructions per request"
    callgrind_annotate --inclusive=yes --threshold=100 "$out.1" 2> /dev/null \
      | awk -v r="$requests" '/^ *[0-9,]+ \(/ { n = $1; gsub(",", "", n); $1 = ""; $2 = ""; printf "%8.0f %s\n", n / r, $0 }' \
      | grep 'floodgate_\|hyper::\|http::\|malloc\|free\|memcpy\|memmove' | head -n "$TOP" || true
  fi
done
cat "$WORK/table"
echo
echo "Settings: DUR=${DUR}s CONNS=$CONNS, one wrk thread, $(valgrind --version)."
