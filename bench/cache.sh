#!/usr/bin/env bash
# bench/cache.sh — cache hits: Floodgate against Varnish and nginx proxy_cache, each told to
# keep the origin's 200 for an hour, the same URL hammered by the same wrk load, in the same
# run, interleaved round by round; the uncached route through Floodgate for reference.
# Reported: req/s, latency, the proxy's CPU and req/s per proxy core (Varnish runs as many
# threads as it likes, so per core is the fair figure), paired ratios to Varnish.
#
# Usage: cargo build --release && bench/cache.sh
# Knobs: DUR=10 REPS=3 CONNS=64 WRK_THREADS=2 WORKERS=1 FLOODGATE_BIN=target/release/floodgate
# (WORKERS sets nginx's worker_processes and Floodgate's runtime.workers.)
# Needs (Debian): nginx varnish wrk python3. Traffic stays on 127.0.0.1:19301-19339.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh" cache nginx varnishd wrk python3
ports_free 19301 19310 19319 19320 19330 19339

nginx_conf origin 1 "    server { listen 127.0.0.1:19301 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
nginx_conf nginx "$WORKERS" "    upstream origin { server 127.0.0.1:19301; keepalive 128; }
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=hits:10m max_size=100m inactive=1h use_temp_path=off;
    server { listen 127.0.0.1:19320 backlog=4096;
             location / { proxy_pass http://origin; proxy_cache hits; proxy_cache_valid 200 1h; } }" > "$WORK/nginx.conf"
cat > "$WORK/varnish.vcl" << 'VCL'
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "19301"; }
sub vcl_backend_response { set beresp.ttl = 1h; }
VCL
# nginx started as root runs its workers as another user, who must reach the cache.
mkdir -p "$WORK/nginx-cache" && chmod a+x "$WORK" && chmod a+rwx "$WORK/nginx-cache"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
start varnish varnishd -F -j none -n "$WORK/varnish" -a 127.0.0.1:19310 -T 127.0.0.1:19319 \
  -f "$WORK/varnish.vcl" -s malloc,256m
start floodgate env BENCH_WORKERS="$WORKERS" "$BIN" run -c "$HERE/cache.yaml"
for port in 19301 19310 19320 19330; do wait_port "$port"; done
sleep 1
# Each cache stores the response on its first request; check that the second is a hit.
for url in http://127.0.0.1:19310/ http://127.0.0.1:19320/ http://127.0.0.1:19330/; do
  curl -s -o /dev/null "$url"
done
curl -s -D - -o /dev/null http://127.0.0.1:19330/ | grep -qi '^cache-status: Floodgate; hit' \
  || { echo "Floodgate did not answer from its cache" >&2; exit 1; }
curl -s -D - -o /dev/null http://127.0.0.1:19310/ | grep -qiE '^age: [1-9]|^x-varnish: [0-9]+ [0-9]+' \
  || log "note: Varnish's second answer shows no hit yet"

printf 'case\trep\trps\tp50_ms\tp99_ms\tnon2xx\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  CPU_PID=$PID_varnish measure varnish-hit http://127.0.0.1:19310/
  CPU_PID=$PID_nginx measure nginx-hit http://127.0.0.1:19320/
  CPU_PID=$PID_floodgate measure floodgate-hit http://127.0.0.1:19330/
  CPU_PID=$PID_floodgate measure floodgate-pass http://127.0.0.1:19330/pass
done

PYTHONPATH=$HERE python3 - "$RESULTS" << PY
import sys
from results import Results
res = Results(sys.argv[1])
print("| case | req/s median | p50 ms | p99 ms | non-2xx | proxy CPU (cores) | req/s per proxy core | paired ratio to Varnish |")
print("|---|---|---|---|---|---|---|---|")
for label, case in [
  ("Varnish 7.1, cache hit", "varnish-hit"),
  ("nginx proxy_cache hit (${WORKERS} worker)", "nginx-hit"),
  ("Floodgate cache hit (${WORKERS} worker)", "floodgate-hit"),
  ("Floodgate, same origin uncached (/pass)", "floodgate-pass"),
]:
    cpu = res.median(case, "cpu")
    print(res.row(label, case, f"{cpu:.2f}", f"{res.per_core(case):,.0f}",
                  f"{res.paired(case, 'varnish-hit'):.2f}"))
print()
print(f"Per core, Floodgate's hits are {res.per_core('floodgate-hit') / res.per_core('varnish-hit'):.2f}× Varnish's "
      f"and {res.per_core('floodgate-hit') / res.per_core('nginx-hit'):.2f}× nginx's.")
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS} WORKERS=${WORKERS}.")
PY
