#!/usr/bin/env bash
# bench/websocket.sh — WebSocket tunnels through Floodgate against nginx proxying the same
# origin, in the same run, interleaved round by round: echo round trips per second and
# their latency with CONNS tunnels each sending one SIZE-byte message at a time, the proxy's
# CPU per message, then the memory each proxy adds per open idle tunnel.
#
# The origin and the load are crates/floodgate/examples/ws_bench.rs (a Python client would
# be slower than the proxies it measures): the origin answers each handshake 101 and echoes
# the bytes, so both proxies carry the same opaque tunnel bytes.
#
# Usage: cargo build --release --bin floodgate --example ws_bench && bench/websocket.sh
# Knobs: DUR=10 REPS=3 CONNS=50 SIZE=64 IDLE_TUNNELS=2000 FLOODGATE_BIN=target/release/floodgate
#        WS_BENCH=target/release/examples/ws_bench
# Needs (Debian): nginx. All traffic stays on 127.0.0.1 ports 19002, 19011, 19031 and 19038.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CONNS=${CONNS:-50}
source "$HERE/lib.sh" websocket nginx
SIZE=${SIZE:-64}
IDLE_TUNNELS=${IDLE_TUNNELS:-2000}
WS_BENCH=${WS_BENCH:-$(dirname "$BIN")/examples/ws_bench}
[ -x "$WS_BENCH" ] || { echo "missing $WS_BENCH: cargo build --release --example ws_bench" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

nginx_conf nginx 1 "    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    upstream wsorigin { server 127.0.0.1:19002; }
    server { listen 127.0.0.1:19011 backlog=4096; location / {
        proxy_pass http://wsorigin; proxy_http_version 1.1;
        proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection \$connection_upgrade;
        proxy_read_timeout 1h; proxy_send_timeout 1h; } }" > "$WORK/nginx.conf"

ports_free 19002 19011 19031 19038
start origin "$WS_BENCH" origin 19002
start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
start floodgate env BENCH_WORKERS=1 BENCH_PORT=19031 BENCH_ADMIN_PORT=19038 BENCH_ORIGIN=127.0.0.1:19002 \
  "$BIN" run -c "$HERE/floodgate.yaml"
for port in 19002 19011 19031; do wait_port "$port"; done
sleep 1

declare -A ADDR=([nginx]=127.0.0.1:19011 [floodgate]=127.0.0.1:19031)
declare -A PID=([nginx]=$PID_nginx [floodgate]=$PID_floodgate)
printf 'proxy\trep\tmsgs\tp50_us\tp99_us\tcpu\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for proxy in nginx floodgate; do
    "$WS_BENCH" load "${ADDR[$proxy]}" "$CONNS" 1 "$SIZE" > /dev/null
    t0=$(cpu_ticks "${PID[$proxy]}")
    read -r _ rate p50 p99 <<< "$("$WS_BENCH" load "${ADDR[$proxy]}" "$CONNS" "$DUR" "$SIZE")"
    t1=$(cpu_ticks "${PID[$proxy]}")
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v d="$DUR" 'BEGIN { printf "%.2f", (b - a) / hz / d }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$rep" "$rate" "$p50" "$p99" "$cpu" >> "$RESULTS"
    log "rep $rep $proxy: $rate round trips/s, p50 ${p50} µs, p99 ${p99} µs, cpu $cpu"
  done
done

# Memory per open idle tunnel: RSS with IDLE_TUNNELS tunnels open, less RSS before.
idle_rss() { # proxy -> "tunnels before_kib during_kib"
  local before
  before=$(rss_kib "${PID[$1]}")
  read -r _ tunnels during <<< "$(held_rss "${PID[$1]}" "$WS_BENCH" idle "${ADDR[$1]}" "$IDLE_TUNNELS")"
  echo "$tunnels $before $during"
}
read -r T_F B_F D_F <<< "$(idle_rss floodgate)"
read -r T_N B_N D_N <<< "$(idle_rss nginx)"

PYTHONPATH=$HERE python3 - "$RESULTS" << PY
import sys
from results import med, paired
s = paired(sys.argv[1], "msgs")
print("| proxy (1 worker) | echo round trips/s median | min–max | p50 µs | p99 µs | proxy CPU (cores) | round trips per proxy core | paired ratio vs nginx |")
print("|---|---|---|---|---|---|---|---|")
for name in ["nginx", "floodgate"]:
    p = s[name]
    print(f"| {name} | {p['median']:,.0f} | {p['min']:,.0f}–{p['max']:,.0f} | {med(p['rows'], 'p50_us'):.0f} | "
          f"{med(p['rows'], 'p99_us'):.0f} | {med(p['rows'], 'cpu'):.2f} | {p['per_core']:,.0f} | {p['paired']:.2f} |")
print()
per = lambda b, d, t: (int(d) - int(b)) * 1024 / max(int(t), 1)
print(f"Memory per open idle tunnel ({'$T_F'} and {'$T_N'} tunnels open): Floodgate "
      f"{per('$B_F', '$D_F', '$T_F'):,.0f} B (RSS {'$B_F'} → {'$D_F'} KiB), nginx (master + worker) "
      f"{per('$B_N', '$D_N', '$T_N'):,.0f} B (RSS {'$B_N'} → {'$D_N'} KiB).")
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} SIZE=${SIZE} B, one worker each.")
PY
