#!/usr/bin/env bash
# bench/ratelimit.sh — what rate limiting costs in the gateway, in the same run:
#   1. throughput with a limit that never refuses, against the same route with no limit
#      (goal: at most 5% less);
#   2. how fast refusals (429) go out, against nginx's limit_req refusing the same load;
#   3. the latency a cluster limit (Redis on 127.0.0.1:6379) adds per request, measured with
#      one connection so that queueing does not hide it (goal: ≤ 0.3 ms at p50).
# Rounds are interleaved; compare the ratios, not raw req/s across runs.
#
# Usage: cargo build --release && bench/ratelimit.sh
# Knobs: DUR=10 REPS=3 CONNS=64 WRK_THREADS=2 WORKERS=1 FLOODGATE_BIN=target/release/floodgate
# Needs (Debian): nginx wrk redis-server (running). Traffic stays on 127.0.0.1:19101-19139.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh" ratelimit nginx wrk python3
(exec 3<> /dev/tcp/127.0.0.1/6379) 2> /dev/null || { echo "Redis is not running on 127.0.0.1:6379" >&2; exit 1; }
ports_free 19101 19110 19130 19139

nginx_conf origin 1 "    server { listen 127.0.0.1:19101 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
# nginx refusing: limit_req by client address at 1 request per minute, no burst.
nginx_conf nginx "$WORKERS" "    upstream origin { server 127.0.0.1:19101; keepalive 128; }
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    limit_req_zone \$binary_remote_addr zone=bench:10m rate=1r/m;
    limit_req_status 429;
    limit_req_log_level info;
    server { listen 127.0.0.1:19110 backlog=4096;
             location /reject { limit_req zone=bench; proxy_pass http://origin; } }" > "$WORK/nginx.conf"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
start floodgate env BENCH_WORKERS="$WORKERS" "$BIN" run -c "$HERE/ratelimit.yaml"
for port in 19101 19110 19130; do wait_port "$port"; done
sleep 1

printf 'case\trep\trps\tp50_ms\tp99_ms\tnon2xx\n' > "$RESULTS"
F=http://127.0.0.1:19130
for rep in $(seq 1 "$REPS"); do
  measure open "$F/open"
  measure limited "$F/limited"
  measure floodgate-reject "$F/reject"
  measure nginx-reject http://127.0.0.1:19110/reject
  measure open-c1 "$F/open" 1 1
  measure cluster-c1 "$F/cluster" 1 1
done

PYTHONPATH=$HERE python3 - "$RESULTS" << PY
import sys
from results import Results
res = Results(sys.argv[1])
m = res.median
print("| case | req/s median | p50 ms | p99 ms | non-2xx | ratio |")
print("|---|---|---|---|---|---|")
for label, case, ratio in [
  ("no limit (/open)", "open", ""),
  ("limit that never refuses (/limited)", "limited", f"{res.paired('limited', 'open'):.3f} of no limit (paired)"),
  ("Floodgate refusing (/reject, 429)", "floodgate-reject", f"{res.paired('floodgate-reject', 'nginx-reject'):.2f} of nginx (paired)"),
  ("nginx limit_req refusing (429)", "nginx-reject", ""),
  ("no limit, 1 connection", "open-c1", ""),
  ("cluster limit (Redis), 1 connection", "cluster-c1",
   f"{(m('cluster-c1','p50_ms') - m('open-c1','p50_ms')) * 1000:+.0f} µs p50, {(m('cluster-c1','p99_ms') - m('open-c1','p99_ms')) * 1000:+.0f} µs p99"),
]:
    print(res.row(label, case, ratio))
print()
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS} WORKERS=${WORKERS}.")
PY
