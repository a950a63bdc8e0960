#!/usr/bin/env bash
# bench/breaker.sh — what circuit breaking costs, and how fast a broken service's fallback
# goes out, in the same run:
#   1. throughput of a route guarded by closed breakers (upstream and route scope) against
#      the same route without (goal: at most 2% less);
#   2. a failing origin (every answer 500) with a fixed fallback: Floodgate's breaker opens
#      and answers the fallback itself; nginx, the usual alternative, marks the server down
#      (max_fails) and answers its error_page fallback. Reported: req/s, latency, and how
#      many requests still reached the failing origin (from its access log).
# Rounds are interleaved; compare the ratios, not raw req/s across runs.
#
# Usage: cargo build --release && bench/breaker.sh
# Knobs: DUR=10 REPS=3 CONNS=64 WRK_THREADS=2 WORKERS=1 FLOODGATE_BIN=target/release/floodgate
# Needs (Debian): nginx wrk. Traffic stays on 127.0.0.1:19201-19239.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh" breaker nginx wrk python3
ports_free 19201 19202 19203 19210 19230 19239

nginx_conf origin 1 "    server { listen 127.0.0.1:19201 backlog=4096; location / { return 200 \"$BODY\n\"; } }
    log_format hit '.';
    server { listen 127.0.0.1:19202 backlog=4096; listen 127.0.0.1:19203 backlog=4096;
             access_log $WORK/failing-hits.log hit;
             location / { return 500 \"broken\n\"; } }" > "$WORK/origin.conf"
# nginx in front of the failing origin: each server is marked down after 5 failures for
# 60 s (max_fails/fail_timeout count 500s through proxy_next_upstream); the fallback
# answers 500/502 errors, including "no live upstreams". Two server entries (both the
# failing origin), because nginx never marks down the only server of a group.
nginx_conf nginx "$WORKERS" "    upstream failing { server 127.0.0.1:19202 max_fails=5 fail_timeout=60s;
                       server 127.0.0.1:19203 max_fails=5 fail_timeout=60s; keepalive 128; }
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    server { listen 127.0.0.1:19210 backlog=4096;
             location /failing { proxy_pass http://failing; proxy_next_upstream error timeout http_500;
                                 proxy_intercept_errors on; error_page 500 502 503 504 = @fallback; }
             location @fallback { return 200 \"fallback\n\"; } }" > "$WORK/nginx.conf"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
start floodgate env BENCH_WORKERS="$WORKERS" "$BIN" run -c "$HERE/breaker.yaml"
for port in 19201 19202 19210 19230; do wait_port "$port"; done
sleep 1

hits() { wc -l < "$WORK/failing-hits.log" 2> /dev/null || echo 0; }
printf 'case\trep\trps\tp50_ms\tp99_ms\tnon2xx\n' > "$RESULTS"
: > "$WORK/hits.tsv"
F=http://127.0.0.1:19230
for rep in $(seq 1 "$REPS"); do
  measure open "$F/open"
  measure guarded "$F/guarded"
  before=$(hits); measure floodgate-fallback "$F/failing"; printf 'floodgate-fallback\t%s\n' $(( $(hits) - before )) >> "$WORK/hits.tsv"
  before=$(hits); measure nginx-fallback http://127.0.0.1:19210/failing; printf 'nginx-fallback\t%s\n' $(( $(hits) - before )) >> "$WORK/hits.tsv"
done

PYTHONPATH=$HERE python3 - "$RESULTS" "$WORK/hits.tsv" << PY
import sys
from results import Results
res = Results(sys.argv[1])
hits = {}
for line in open(sys.argv[2]):
    case, n = line.split()
    hits.setdefault(case, []).append(n)
print("| case | req/s median | p50 ms | p99 ms | non-2xx | reached the failing origin | ratio |")
print("|---|---|---|---|---|---|---|")
for label, case, ratio in [
  ("no breaker (/open)", "open", ""),
  ("closed breakers, upstream + route (/guarded)", "guarded", f"{res.paired('guarded', 'open'):.3f} of no breaker (paired)"),
  ("Floodgate, failing origin, breaker open + fallback", "floodgate-fallback", f"{res.paired('floodgate-fallback', 'nginx-fallback'):.2f} of nginx (paired)"),
  ("nginx, failing origin, max_fails + error_page", "nginx-fallback", ""),
]:
    print(res.row(label, case, ", ".join(hits.get(case, [])) or "–", ratio))
print()
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS} WORKERS=${WORKERS}.")
PY
