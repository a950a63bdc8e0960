#!/usr/bin/env bash
# bench/grpc.sh — gRPC unary calls through Floodgate against nginx's grpc_pass, the same
# origin, the same h2load load, in the same run, interleaved round by round.
#
# The origin is crates/floodgate/examples/grpc_bench.rs: it answers every call as a gRPC
# server answers a unary call (its message back, `grpc-status: 0` in the trailers). The
# load is h2load posting a 5-byte-framed gRPC message with `content-type:
# application/grpc` and `te: trailers` over h2c, CONNS connections with STREAMS calls in
# flight on each. h2load reports mean and maximum call times, not percentiles.
#
# Usage: cargo build --release --bin floodgate --example grpc_bench && bench/grpc.sh
# Knobs: DUR=10 REPS=3 CONNS=16 STREAMS=8 FLOODGATE_BIN=target/release/floodgate
#        GRPC_BENCH=target/release/examples/grpc_bench
# Needs (Debian): nginx nghttp2-client (h2load). All traffic stays on 127.0.0.1 ports
# 19003, 19012, 19032 and 19037.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONNS=${CONNS:-16}
source "$HERE/lib.sh" grpc nginx h2load
STREAMS=${STREAMS:-8}
GRPC_BENCH=${GRPC_BENCH:-$(dirname "$BIN")/examples/grpc_bench}
[ -x "$GRPC_BENCH" ] || { echo "missing $GRPC_BENCH: cargo build --release --example grpc_bench" >&2; exit 1; }

nginx_conf nginx 1 "    upstream grpcorigin { server 127.0.0.1:19003; keepalive 64; }
    server { listen 127.0.0.1:19012 http2; location / { grpc_pass grpc://grpcorigin; } }" > "$WORK/nginx.conf"
cat > "$WORK/floodgate.yaml" << CONF
runtime: { workers: 1 }
listeners: [ { name: bench, address: "127.0.0.1:19032" } ]
admin: { address: "127.0.0.1:19037" }
access_log: { enabled: false }
upstreams:
  grpc: { protocol: http2, targets: [ "127.0.0.1:19003" ] }
routes:
  - { name: grpc, match: { path_prefix: / }, upstream: grpc }
CONF
# One call's message: the gRPC frame (uncompressed flag, 4-byte length) around 16 bytes.
printf '\x00\x00\x00\x00\x10%s' 'floodgate-bench!' > "$WORK/call.bin"

ports_free 19003 19012 19032 19037
start origin "$GRPC_BENCH" origin 19003
start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
start floodgate "$BIN" run -c "$WORK/floodgate.yaml"
for port in 19003 19012 19032; do wait_port "$port"; done
sleep 1

declare -A PORT=([nginx]=19012 [floodgate]=19032)
declare -A PID=([nginx]=$PID_nginx [floodgate]=$PID_floodgate)
calls() { # port seconds -> h2load's output
  h2load -D "$2" -c "$CONNS" -m "$STREAMS" -d "$WORK/call.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$1/bench.Echo/Unary"
}
printf 'proxy\trep\trps\tmean_ms\tmax_ms\tok\tcpu\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for proxy in nginx floodgate; do
    calls "${PORT[$proxy]}" 1 > /dev/null
    t0=$(cpu_ticks "${PID[$proxy]}")
    out=$(calls "${PORT[$proxy]}" "$DUR")
    t1=$(cpu_ticks "${PID[$proxy]}")
    rps=$(echo "$out" | awk '/^finished in/ {print $4}')
    read -r mean maxv <<< "$(echo "$out" | awk '/^time for request:/ {print $6, $5}')"
    ok=$(echo "$out" | awk '/^status codes:/ {print $3}')
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v d="$DUR" 'BEGIN { printf "%.2f", (b - a) / hz / d }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$rep" "$rps" "$(to_ms "$mean")" "$(to_ms "$maxv")" "$ok" "$cpu" >> "$RESULTS"
    log "rep $rep $proxy: $rps calls/s, mean $mean, max $maxv, 2xx $ok, cpu $cpu"
  done
done

PYTHONPATH=$HERE python3 - "$RESULTS" << PY
import sys
from results import med, paired
s = paired(sys.argv[1], "rps")
print("| proxy (1 worker) | unary calls/s median | min–max | mean ms | max ms | proxy CPU (cores) | calls per proxy core | paired ratio vs nginx |")
print("|---|---|---|---|---|---|---|---|")
for name in ["nginx", "floodgate"]:
    p = s[name]
    print(f"| {name} | {p['median']:,.0f} | {p['min']:,.0f}–{p['max']:,.0f} | {med(p['rows'], 'mean_ms'):.2f} | "
          f"{med(p['rows'], 'max_ms'):.1f} | {med(p['rows'], 'cpu'):.2f} | {p['per_core']:,.0f} | {p['paired']:.2f} |")
print()
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} STREAMS=${STREAMS}, a 16-byte message each way, one worker each.")
PY
