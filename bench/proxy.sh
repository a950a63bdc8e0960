#!/usr/bin/env bash
# bench/proxy.sh — Floodgate against nginx and HAProxy as plain reverse proxies: the same
# origin, the same wrk load, the same run, interleaved round by round; then memory with idle
# keep-alive clients.
#
# Each proxy gets the same number of workers (WORKERS, default 1: nginx worker_processes,
# HAProxy nbthread, Floodgate runtime.workers), a keep-alive pool to the origin, and no
# access log. On a 2-core machine
# the origin and wrk take most of the other core, so compare the ratios measured in the same
# round and the req/s per proxy core, never raw req/s across runs.
#
# Usage: cargo build --release && bench/proxy.sh
# Knobs: DUR=10 REPS=3 CONNS=64 WRK_THREADS=2 IDLE_CONNS=10000 WORKERS=1 FLOODGATE_BIN=target/release/floodgate
# Needs (Debian): nginx haproxy wrk python3. All traffic stays on 127.0.0.1 ports 19001-19039.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh" proxy nginx haproxy wrk python3
IDLE_CONNS=${IDLE_CONNS:-10000}
ulimit -n "$(ulimit -Hn)"  # 10,000 idle clients need more than the usual 1024

# ------------------------------------------------------------------ configs
nginx_conf origin 1 "    server { listen 127.0.0.1:19001 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
nginx_conf nginx "$WORKERS" "    upstream origin { server 127.0.0.1:19001; keepalive 128; keepalive_requests 1000000; }
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    server { listen 127.0.0.1:19010 backlog=4096; location / { proxy_pass http://origin; } }" > "$WORK/nginx.conf"
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
    timeout http-keep-alive 120s
    maxconn 9000
frontend fe
    bind 127.0.0.1:19020
    default_backend be
backend be
    server origin 127.0.0.1:19001 maxconn 1000
CONF

# ------------------------------------------------------------------ start
ports_free 19001 19010 19020 19030 19039
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
start haproxy haproxy -db -f "$WORK/haproxy.cfg"
start floodgate env BENCH_WORKERS="$WORKERS" "$BIN" run -c "$HERE/floodgate.yaml"
for port in 19001 19010 19020 19030; do wait_port "$port"; done
sleep 1
IDLE_RSS=$(rss_kib "$PID_floodgate")
log "floodgate idle RSS: ${IDLE_RSS} KiB"

declare -A URL=([nginx]=http://127.0.0.1:19010/ [haproxy]=http://127.0.0.1:19020/ [floodgate]=http://127.0.0.1:19030/)
declare -A PID=([nginx]=$PID_nginx [haproxy]=$PID_haproxy [floodgate]=$PID_floodgate)
PROXIES=(nginx haproxy floodgate)


printf 'proxy\trep\trps\tp50_ms\tp99_ms\tcpu\tnon2xx\tuser_us\tsys_us\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for proxy in "${PROXIES[@]}"; do
    url=${URL[$proxy]}
    wrk -t"$WRK_THREADS" -c"$CONNS" -d1s "$url" > /dev/null
    read -r u0 k0 <<< "$(cpu_split "${PID[$proxy]}")"
    out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DUR}s" --latency "$url")
    read -r u1 k1 <<< "$(cpu_split "${PID[$proxy]}")"
    t0=$((u0 + k0)) t1=$((u1 + k1))
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    non2xx=$(echo "$out" | awk '/Non-2xx or 3xx responses:/ {print $5}')
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v d="$DUR" 'BEGIN { printf "%.2f", (b - a) / hz / d }')
    # CPU per request, split: user space (the proxy's own work) and kernel (the sockets).
    per_req() { awk -v a="$1" -v b="$2" -v hz="$HZ" -v n="$rps" -v d="$DUR" 'BEGIN { printf "%.2f", (b - a) / hz / (n * d) * 1e6 }'; }
    user_us=$(per_req "$u0" "$u1") sys_us=$(per_req "$k0" "$k1")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$rep" "$rps" "$p50" "$p99" "$cpu" "${non2xx:-0}" "$user_us" "$sys_us" >> "$RESULTS"
    log "rep $rep $proxy: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, cpu $cpu"
  done
done

LOAD_RSS=$(rss_kib "$PID_floodgate")

# ------------------------------------------------------------------ memory with idle clients
idle_rss() { # proxy port -> "ready N" and the proxy's RSS KiB while IDLE_CONNS idle clients are open
  held_rss "${PID[$1]}" python3 "$HERE/idle_conns.py" 127.0.0.1 "$2" "$IDLE_CONNS" 120
}
read -r _ OK_F RSS_F <<< "$(idle_rss floodgate 19030)"
read -r _ OK_N RSS_N <<< "$(idle_rss nginx 19010)"

python3 - "$RESULTS" << PY
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = lambda xs: statistics.median(xs)
by = {}
for r in rows:
    by.setdefault(r["proxy"], []).append(r)
ref = {r["rep"]: float(r["rps"]) for r in by["nginx"]}
print("| proxy (${WORKERS} worker(s)) | req/s median | min–max | p50 ms | p99 ms | proxy CPU (cores) | req/s per proxy core | CPU µs per request: user + kernel | vs nginx (medians) | paired ratio vs nginx |")
print("|---|---|---|---|---|---|---|---|---|---|")
n_med = med([float(r["rps"]) for r in by["nginx"]])
for name in ["nginx", "haproxy", "floodgate"]:
    rs = by[name]
    rps = [float(r["rps"]) for r in rs]
    eff = med([float(r["rps"]) / float(r["cpu"]) for r in rs if float(r["cpu"]) > 0])
    paired = med([float(r["rps"]) / ref[r["rep"]] for r in rs])
    print(f"| {name} | {med(rps):,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | {med([float(r['p50_ms']) for r in rs]):.2f} | "
          f"{med([float(r['p99_ms']) for r in rs]):.2f} | {med([float(r['cpu']) for r in rs]):.2f} | {eff:,.0f} | "
          f"{med([float(r['user_us']) for r in rs]):.1f} + {med([float(r['sys_us']) for r in rs]):.1f} | "
          f"{med(rps) / n_med:.2f} | {paired:.2f} |")
print()
print(f"Memory: Floodgate idle RSS ${IDLE_RSS} KiB at start, ${LOAD_RSS} KiB right after the load; "
      f"with ${IDLE_CONNS} idle keep-alive clients ({'$OK_F'} answered): Floodgate ${RSS_F} KiB, "
      f"nginx (master + worker) ${RSS_N} KiB ({'$OK_N'} answered).")
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS}; "
      f"{sum(int(r['non2xx'] or 0) for r in rows)} non-2xx responses in all runs.")
PY
