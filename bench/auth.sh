#!/usr/bin/env bash
# bench/auth.sh — what JWT validation (ES256) plus a rate limit per consumer cost, against
# the same route bare, in the same run (goal: at most 10% less throughput; Kong's published
# figure for rate limiting plus key auth is 24%). The token comes from Floodgate's own token
# endpoint, signed with a P-256 key made for the run.
#
# Usage: cargo build --release && bench/auth.sh
# Knobs: DUR=10 REPS=3 CONNS=64 WRK_THREADS=2 WORKERS=1 FLOODGATE_BIN=target/release/floodgate
# Needs (Debian): nginx wrk openssl curl python3. Ports 127.0.0.1:19501-19539.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh" auth nginx wrk openssl curl python3
ports_free 19501 19530 19539

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/signing.pem" 2> /dev/null
nginx_conf origin 1 "    server { listen 127.0.0.1:19501 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
start floodgate env BENCH_WORKERS="$WORKERS" BENCH_SIGNING_KEY="$WORK/signing.pem" "$BIN" run -c "$HERE/auth.yaml"
for port in 19501 19530; do wait_port "$port"; done
TOKEN=$(curl -s -u bench:demo-secret -d grant_type=client_credentials http://127.0.0.1:19530/oauth2/token \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
sleep 1

WRK_EXTRA=(-H "Authorization: Bearer $TOKEN")

printf 'case\trep\trps\tp50_ms\tp99_ms\tnon2xx\n' > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  measure open http://127.0.0.1:19530/open
  measure jwt http://127.0.0.1:19530/jwt
done

PYTHONPATH=$HERE python3 - "$RESULTS" << PY
import sys
from results import Results
res = Results(sys.argv[1])
print("| case | req/s median | p50 ms | p99 ms | non-2xx | ratio |")
print("|---|---|---|---|---|---|")
print(res.row("bare route (/open)", "open", ""))
print(res.row("JWT ES256 + rate limit per consumer (/jwt)", "jwt", f"{res.paired('jwt', 'open'):.3f} of bare (paired)"))
print()
print(f"Settings: DUR=${DUR}s REPS=${REPS} CONNS=${CONNS} WRK_THREADS=${WRK_THREADS} WORKERS=${WORKERS}.")
PY
