#!/usr/bin/env bash
# bench/idle_memory.sh — memory each idle keep-alive client connection costs Floodgate: the
# resident set of the process with IDLE clients connected (each sent one request, read its
# answer and stays open, see idle_conns.py), minus the resident set before they came,
# divided by IDLE. Compares builds, each in turn behind the same nginx origin (one worker,
# bench/floodgate.yaml), REPS times in alternation. Each build takes ROUNDS rounds of
# clients that come and leave; the last column is the resident set once the last round
# has left (memory given back, or kept by the allocator).
#
# Usage: cargo build --release && bench/idle_memory.sh [BINARY...]   (default: this build)
# Knobs: IDLE=3000 REPS=2 ROUNDS=1 SETTLE=15 (seconds the allocator gets to give memory
# back after the clients of a round left; jemalloc's decay takes about ten)
# Needs (Debian): nginx python3. Traffic stays on 127.0.0.1:19001 and 19030.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
IDLE=${IDLE:-3000}
REPS=${REPS:-2}
ROUNDS=${ROUNDS:-1}
SETTLE=${SETTLE:-15}
source "$HERE/lib.sh" idle-memory nginx python3
ports_free 19001 19030
[ $# -gt 0 ] || set -- "$BIN"

nginx_conf origin 1 "    server { listen 127.0.0.1:19001 backlog=4096; location / { return 200 \"$BODY\n\"; } }" > "$WORK/origin.conf"
start origin nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;'
wait_port 19001

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

printf '| build | run | RSS before (KiB) | RSS with %s idle clients (KiB) | bytes per idle client | RSS after %s round(s) left (KiB) |\n|---|---|---|---|---|---|\n' "$IDLE" "$ROUNDS" > "$WORK/table"
for rep in $(seq 1 "$REPS"); do
  n=0
  for bin in "$@"; do
    n=$((n + 1))
    name=floodgate${n}_$rep
    start "$name" env BENCH_WORKERS=1 "$(realpath "$bin")" run -c "$HERE/floodgate.yaml"
    pid_var=PID_$name
    pid=${!pid_var}
    wait_port 19030
    before=$(rss_kib "$pid")
    for round in $(seq 1 "$ROUNDS"); do
      # The clients hold their connections until their stdin closes.
      out="$WORK/clients-$name-$round.out"
      exec {to_clients}> >(python3 "$HERE/idle_conns.py" 127.0.0.1 19030 "$IDLE" 120 > "$out")
      for _ in $(seq 1 1200); do grep -q '^ready' "$out" 2> /dev/null && break; sleep 0.1; done
      grep -q "^ready $IDLE\$" "$out" || { echo "not every client was answered: $(cat "$out")" >&2; exit 1; }
      sleep 1
      with=$(rss_kib "$pid")
      exec {to_clients}>&-
      # Until the gateway has seen every client leave (its open-connection count).
      for _ in $(seq 1 100); do
        open=$(curl -s "http://127.0.0.1:19039/metrics" | awk '/^floodgate_open_connections/ {s += $2} END {print s + 0}')
        [ "${open%.*}" -le 0 ] && break
        sleep 0.1
      done
      sleep "$SETTLE"
      after=$(rss_kib "$pid")
    done
    kill -TERM "$pid"
    wait "$pid" 2> /dev/null || true
    per=$(( (with - before) * 1024 / IDLE ))
    log "$bin (run $rep): $before KiB, then $with KiB with $IDLE idle clients: $per bytes each; $after KiB after they left"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$bin" "$rep" "$before" "$with" "$per" "$after" >> "$WORK/table"
  done
done
echo
cat "$WORK/table"
echo
echo "Settings: IDLE=$IDLE REPS=$REPS ROUNDS=$ROUNDS SETTLE=${SETTLE}s, one worker, bench/floodgate.yaml."
