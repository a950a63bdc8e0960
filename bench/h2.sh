#!/usr/bin/env bash
# bench/h2.sh — Floodgate's throughput to one nginx origin over HTTP/1.1 (a pool of
# keep-alive connections) and over HTTP/2 with prior knowledge (one multiplexed
# connection), interleaved in the same run; clients speak HTTP/1.1 to Floodgate (wrk).
#
# Usage: cargo build --release && bench/h2.sh
# Knobs: DUR=10 REPS=3 CONNS=64 WRK_THREADS=2 WORKERS=1 FLOODGATE_BIN=target/release/floodgate
#        H2_MAX_REQUESTS=10000000 (the HTTP/2 origin's keepalive_requests, http2_max_requests
#        before nginx 1.19.7: a small value makes nginx end the HTTP/2 connection with GOAWAY
#        that often, to watch the requests caught by it)
# Needs (Debian): nginx wrk python3. Ports 127.0.0.1:19301-19339.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh" h2 nginx wrk python3
ports_free 19301 19302 19330 19339

H2_MAX_REQUESTS=${H2_MAX_REQUESTS:-10000000}
nginx_conf origin 1 "    http2_max_requests $H2_MAX_REQUESTS;
    server { listen 127.0.0.1:19301 http2 backlog=4096; keepalive_requests $H2_MAX_REQUESTS; location / { return 200 \"$BODY\n\"; } }
    server { listen 127.0.0.1:19302 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
start floodgate env BENCH_WORKERS="$WORKERS" "$BIN" run -c "$HERE/h2.yaml"
for port in 19301 19302 19330; do wait_port "$port"; done
sleep 1

printf 'case\trep\trps\tp50_ms\tp99_ms\tnon2xx\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for c in h1 h2; do
    measure "$c" "http://127.0.0.1:19330/$c"
  done
done
PYTHONPATH=$HERE python3 - "$RESULTS" << PY
import sys
from results import Results
res = Results(sys.argv[1])
print("| upstream protocol | req/s median | p50 ms | p99 ms | non-2xx | vs HTTP/1.1 (paired) |")
print("|---|---|---|---|---|---|")
for c, label in [("h1", "HTTP/1.1, pooled connections"), ("h2", "HTTP/2, one connection")]:
    print(res.row(label, c, f"{res.paired(c, 'h1'):.2f}", digits=2))
print()
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS} WORKERS=${WORKERS} H2_MAX_REQUESTS=${H2_MAX_REQUESTS}.")
PY
