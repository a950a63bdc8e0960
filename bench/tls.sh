#!/usr/bin/env bash
# bench/tls.sh — HTTPS termination against nginx with the same certificate (P-256, the
# listener test fixture), both proxying to one cleartext origin, in the same run:
#   1. TLS request throughput on keep-alive connections;
#   2. the full-handshake rate: every request on a new connection (`Connection: close`),
#      so each one pays a TLS 1.3 handshake (wrk does not resume sessions).
# Rounds are interleaved; compare the ratios, not raw req/s across runs.
#
# Usage: cargo build --release && bench/tls.sh
# Knobs: DUR=10 REPS=3 CONNS=64 WRK_THREADS=2 WORKERS=1 FLOODGATE_BIN=target/release/floodgate
# Needs (Debian): nginx wrk python3. Ports 127.0.0.1:19401-19439.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh" tls nginx wrk python3
ports_free 19401 19410 19430 19439
CERT=$ROOT/crates/floodgate/tests/it/fixtures/listener/shop.pem
KEY=$ROOT/crates/floodgate/tests/it/fixtures/listener/shop.key

nginx_conf origin 1 "    server { listen 127.0.0.1:19401 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
# nginx with its defaults for TLS 1.2/1.3 and the same certificate; no session cache, as
# Floodgate keeps only rustls's small default one.
nginx_conf nginx "$WORKERS" "    upstream origin { server 127.0.0.1:19401; keepalive 128; }
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    server { listen 127.0.0.1:19410 ssl backlog=4096;
             ssl_certificate $CERT; ssl_certificate_key $KEY;
             ssl_protocols TLSv1.2 TLSv1.3;
             location / { proxy_pass http://origin; } }" > "$WORK/nginx.conf"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
start nginx nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
start floodgate env BENCH_WORKERS="$WORKERS" BENCH_CERT="$CERT" BENCH_KEY="$KEY" "$BIN" run -c "$HERE/tls.yaml"
for port in 19401 19410 19430; do wait_port "$port"; done
sleep 1

printf 'case\trep\trps\tp50_ms\tp99_ms\tnon2xx\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  measure floodgate-keepalive https://127.0.0.1:19430/
  measure nginx-keepalive https://127.0.0.1:19410/
  WRK_EXTRA=(-H 'Connection: close')
  measure floodgate-handshake https://127.0.0.1:19430/
  measure nginx-handshake https://127.0.0.1:19410/
  WRK_EXTRA=()
done

PYTHONPATH=$HERE python3 - "$RESULTS" << PY
import sys
from results import Results
res = Results(sys.argv[1])
print("| case | req/s median | p50 ms | p99 ms | non-2xx | vs nginx (paired) |")
print("|---|---|---|---|---|---|")
for label, case, peer in [
  ("Floodgate, keep-alive HTTPS", "floodgate-keepalive", "nginx-keepalive"),
  ("nginx, keep-alive HTTPS", "nginx-keepalive", None),
  ("Floodgate, a handshake per request", "floodgate-handshake", "nginx-handshake"),
  ("nginx, a handshake per request", "nginx-handshake", None),
]:
    print(res.row(label, case, f"{res.paired(case, peer):.2f}" if peer else ""))
print()
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS} WORKERS=${WORKERS}.")
PY
