#!/usr/bin/env bash
# bench/balance.sh — balancing around a slow target, in the same run: three origins, the
# third answering after 50 ms; Floodgate with round robin, least request and peak EWMA,
# against nginx `least_conn` and HAProxy `leastconn` on the same origins. Reports req/s,
# p50 and p99 for each, and Floodgate's upstream connection reuse ratio over the whole run.
#
# Usage: cargo build --release && bench/balance.sh
# Knobs: DUR=10 REPS=3 CONNS=64 WRK_THREADS=2 WORKERS=1 FLOODGATE_BIN=target/release/floodgate
# Needs (Debian): nginx libnginx-mod-http-echo haproxy wrk python3. Ports 127.0.0.1:19201-19239.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh" balance nginx haproxy wrk python3
ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so
[ -f "$ECHO_MODULE" ] || { echo "missing $ECHO_MODULE: apt-get install -y libnginx-mod-http-echo" >&2; exit 1; }
ports_free 19201 19202 19203 19210 19220 19230 19239

# Origins: two fast, one that sleeps 50 ms per request (echo module, no thread blocked).
{ echo "load_module $ECHO_MODULE;"; nginx_conf origins 1 "
    server { listen 127.0.0.1:19201 backlog=4096; location / { return 200 \"$BODY\n\"; } }
    server { listen 127.0.0.1:19202 backlog=4096; location / { return 200 \"$BODY\n\"; } }
    server { listen 127.0.0.1:19203 backlog=4096; location / { echo_sleep 0.05; echo \"$BODY\"; } }"; } > "$WORK/origins.conf"
nginx_conf nginx "$WORKERS" "    upstream three { least_conn; server 127.0.0.1:19201; server 127.0.0.1:19202; server 127.0.0.1:19203; keepalive 128; }
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    server { listen 127.0.0.1:19210 backlog=4096; location / { proxy_pass http://three; } }" > "$WORK/nginx.conf"
cat > "$WORK/haproxy.cfg" << CONF
global
    nbthread $WORKERS
    maxconn 9000
defaults
    mode http
    option http-keep-alive
    http-reuse safe
    timeout connect 5s
    timeout client 120s
    timeout server 30s
    maxconn 9000
frontend fe
    bind 127.0.0.1:19220
    default_backend be
backend be
    balance leastconn
    server a 127.0.0.1:19201
    server b 127.0.0.1:19202
    server c 127.0.0.1:19203
CONF

start origins nginx -p "$WORK" -c "$WORK/origins.conf" -g 'daemon off;'
start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
start haproxy haproxy -db -f "$WORK/haproxy.cfg"
start floodgate env BENCH_WORKERS="$WORKERS" "$BIN" run -c "$HERE/balance.yaml"
for port in 19201 19202 19203 19210 19220 19230; do wait_port "$port"; done
sleep 1

declare -A URL=(
  [floodgate-rr]=http://127.0.0.1:19230/rr
  [floodgate-least-request]=http://127.0.0.1:19230/lr
  [floodgate-peak-ewma]=http://127.0.0.1:19230/ewma
  [nginx-least-conn]=http://127.0.0.1:19210/
  [haproxy-leastconn]=http://127.0.0.1:19220/
)
CASES=(floodgate-rr floodgate-least-request floodgate-peak-ewma nginx-least-conn haproxy-leastconn)
printf 'case\trep\trps\tp50_ms\tp99_ms\tnon2xx\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for c in "${CASES[@]}"; do
    measure "$c" "${URL[$c]}"
  done
done
curl -s http://127.0.0.1:19239/metrics > "$WORK/metrics.txt"

python3 - "$RESULTS" "$WORK/metrics.txt" << PY
import csv, re, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows:
    by.setdefault(r["case"], []).append(r)
med = statistics.median
print("| balancer (one slow target of three) | req/s median | p50 ms | p99 ms | non-2xx |")
print("|---|---|---|---|---|")
for c in ["floodgate-rr", "floodgate-least-request", "floodgate-peak-ewma", "nginx-least-conn", "haproxy-leastconn"]:
    rs = by[c]
    print(f"| {c} | {med(float(r['rps']) for r in rs):,.0f} | {med(float(r['p50_ms']) for r in rs):.2f} | "
          f"{med(float(r['p99_ms']) for r in rs):.2f} | {sum(int(r['non2xx'] or 0) for r in rs)} |")
reused = new = 0
for line in open(sys.argv[2]):
    m = re.match(r'floodgate_upstream_exchanges_total\{.*connection="(reused|new)"\} (\d+)', line)
    if m:
        if m.group(1) == "reused": reused += int(m.group(2))
        else: new += int(m.group(2))
total = reused + new
print()
print(f"Floodgate upstream connection reuse over the whole run: {reused:,} of {total:,} exchanges "
      f"on pooled connections ({100.0 * reused / max(total, 1):.3f}%), {new:,} new connections.")
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS} WORKERS=${WORKERS}.")
PY
