# bench/lib.sh — helpers shared by the benchmark scripts (sourced, not run). Sets the common
# knobs' defaults, checks the tools a script names, makes its scratch directory ($WORK) and
# stops what it started on exit.
#   source "$HERE/lib.sh" NAME TOOL...

ROOT=$(cd "$HERE/.." && pwd)
DUR=${DUR:-10}
REPS=${REPS:-3}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
WORKERS=${WORKERS:-1}   # worker processes / threads of every proxy (origins keep 1)
BIN=${FLOODGATE_BIN:-$ROOT/target/release/floodgate}
for tool in "${@:2}"; do
  command -v "$tool" > /dev/null || { echo "missing $tool: install it from Debian's packages" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "missing $BIN: run cargo build --release first" >&2; exit 1; }
WORK=$(mktemp -d "/tmp/floodgate-$1-bench.XXXXXX")
RESULTS=$WORK/results.tsv

PIDS=()
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Stops every process this script started (by PID), on any exit.
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  log "stopped everything started; work files in $WORK"
}
trap cleanup EXIT

start() { # name, command... — runs it in the background, logs to $WORK/name.log, sets PID_name
  local name=$1; shift
  "$@" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$name=$!"
  log "started $name (pid $!)"
}

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2; exit 1
}

ports_free() { # port... — refuses to run over something already listening
  local port
  for port in "$@"; do
    if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
      echo "port $port is already in use: stop whatever listens there first" >&2; exit 1
    fi
  done
}

# An nginx config: name, worker processes, the http block's contents.
nginx_conf() {
  cat << CONF
worker_processes $2;
worker_rlimit_nofile 65536;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log error;
events { worker_connections 32768; }
http {
    access_log off;
    server_tokens off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORK/$1-body;
    proxy_temp_path $WORK/$1-proxy;
    fastcgi_temp_path $WORK/$1-fcgi;
    uwsgi_temp_path $WORK/$1-uwsgi;
    scgi_temp_path $WORK/$1-scgi;
$3
}
CONF
}

# CPU time and memory of a process and its descendants, from /proc.
HZ=$(getconf CLK_TCK)
descendants() { # pid -> pid and all descendants
  local p=$1 c
  [ -d "/proc/$p" ] || return 0
  echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2> /dev/null); do descendants "$c"; done
}
cpu_ticks() { local sum=0 p v
  for p in $(descendants "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2> /dev/null | awk '{print $12 + $13}')
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"; }
cpu_split() { # pid -> "user system" clock ticks of the process and its descendants
  local u=0 k=0 p a b
  for p in $(descendants "$1"); do
    read -r a b < <(sed 's/^.*) //' "/proc/$p/stat" 2> /dev/null | awk '{print $12, $13}')
    u=$((u + ${a:-0})); k=$((k + ${b:-0}))
  done
  echo "$u $k"; }
rss_kib() { local sum=0 p v
  for p in $(descendants "$1"); do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2> /dev/null)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"; }

# held_rss PID COMMAND... — runs COMMAND, which opens connections, prints "ready N" and holds
# them until its stdin closes; once it is ready, prints "ready N" and the RSS (KiB) of PID
# and its descendants; then lets the connections go.
held_rss() {
  local pid=$1 fifo out holder
  shift
  fifo=$(mktemp -u "$WORK/hold.XXXXXX")
  out=$fifo.out
  mkfifo "$fifo"
  "$@" < "$fifo" > "$out" &
  holder=$!
  exec 7> "$fifo"
  for _ in $(seq 1 600); do grep -q ready "$out" 2> /dev/null && break; sleep 0.1; done
  echo "$(cat "$out") $(rss_kib "$pid")"
  exec 7>&-
  wait "$holder" 2> /dev/null || true
}

# The body every benchmark origin answers with.
BODY='origin-ok 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefg'

# wrk's latency (`850.00us`, `1.20ms`, `2.00s`) in milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v } else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 } else print v }'; }

# Extra wrk arguments for every measure (such as -H 'Connection: close').
WRK_EXTRA=()

# measure LABEL URL [CONNS] [THREADS]: a 1 s warm-up, then DUR seconds of wrk (with
# WRK_EXTRA); appends "LABEL REP req/s p50_ms p99_ms non2xx" (tab-separated) to $RESULTS,
# REP being $rep. With CPU_PID set, also "LABEL REP cores" to $RESULTS.cpu: the CPU that
# process and its descendants used during the run, in cores.
measure() {
  local label=$1 url=$2 conns=${3:-$CONNS} threads=${4:-$WRK_THREADS} out t0 t1
  wrk -t"$threads" -c"$conns" -d1s "${WRK_EXTRA[@]}" "$url" > /dev/null
  [ -n "${CPU_PID:-}" ] && t0=$(cpu_ticks "$CPU_PID")
  out=$(wrk -t"$threads" -c"$conns" -d"${DUR}s" --latency "${WRK_EXTRA[@]}" "$url")
  if [ -n "${CPU_PID:-}" ]; then
    t1=$(cpu_ticks "$CPU_PID")
    awk -v l="$label" -v r="$rep" -v a="$t0" -v b="$t1" -v hz="$HZ" -v d="$DUR" \
      'BEGIN { printf "%s\t%s\t%.2f\n", l, r, (b - a) / hz / d }' >> "$RESULTS.cpu"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rep" \
    "$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')" \
    "$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")" \
    "$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")" \
    "$(echo "$out" | awk '/Non-2xx or 3xx responses:/ {print $5}')" >> "$RESULTS"
  log "rep $rep $label: $(tail -1 "$RESULTS" | cut -f3-)"
}
