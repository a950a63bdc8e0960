#!/usr/bin/env bash
# Runs mnot's HTTP caching tests (the npm package http-cache-tests: an origin server and a
# command-line client) through Floodgate with caching on (the defaults, and strict: without
# negative caching, whose negative_ttl deliberately outranks an origin's word on 404/410),
# and through nginx with proxy_cache when nginx is installed, then scores them by test kind
# with the suite's own verdicts. Results (one JSON per proxy, the suite's format) go to results/; commit them so
# regressions show in review.
#
#   conformance/http-cache-tests/run.sh            # release build of floodgate
#   FLOODGATE_BIN=path/to/floodgate conformance/http-cache-tests/run.sh
#   CONFORMANCE_CHECK=1 ... run.sh                 # CI: Floodgate only, results kept aside and
#                                                  # compared with the committed ones; a test
#                                                  # that passed there and fails now fails
#
# Everything listens on 127.0.0.1, ports 18094-18099; everything started is stopped by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

ORIGIN_PORT=18094 FLOODGATE_PORT=18095 ADMIN_PORT=18096 NGINX_PORT=18097
STRICT_PORT=18098 STRICT_ADMIN_PORT=18099
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1; logs:" >&2
    tail -n 20 "$work"/*.log >&2 || true
    return 1
}

npm install --no-audit --no-fund --silent
suite="$here/node_modules/http-cache-tests"

bin=${FLOODGATE_BIN:-$root/target/release/floodgate}
if [[ -z "${FLOODGATE_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --quiet --bin floodgate)
fi

# The origin (the suite's server; it reads its port and pid file from npm's variables).
export npm_package_config_protocol=http npm_package_config_port=$ORIGIN_PORT
export npm_package_config_pidfile="$work/origin.pid"
(cd "$suite" && exec node server/server.mjs) >"$work/origin.log" 2>&1 &
pids+=($!)
wait_port "$ORIGIN_PORT"

run_suite() { # name base-url
    echo "running the suite through $1 ($2)" >&2
    (cd "$suite" && npm_config_base="$2" npm_package_config_id="" npm_config_id="" \
        node --no-warnings cli.mjs) >"$out/$1.json"
}

check=${CONFORMANCE_CHECK:-}
out=results
if [[ -n "$check" ]]; then
    out="$work/results"
fi
mkdir -p "$out"
CONFORMANCE_PORT=$FLOODGATE_PORT CONFORMANCE_ADMIN_PORT=$ADMIN_PORT \
    CONFORMANCE_ORIGIN_PORT=$ORIGIN_PORT "$bin" run -c floodgate.yaml 2>"$work/floodgate.log" &
pids+=($!)
wait_port "$FLOODGATE_PORT"
run_suite floodgate "http://127.0.0.1:$FLOODGATE_PORT"
CONFORMANCE_PORT=$STRICT_PORT CONFORMANCE_ADMIN_PORT=$STRICT_ADMIN_PORT \
    CONFORMANCE_ORIGIN_PORT=$ORIGIN_PORT "$bin" run -c floodgate-strict.yaml 2>"$work/strict.log" &
pids+=($!)
wait_port "$STRICT_PORT"
run_suite floodgate-strict "http://127.0.0.1:$STRICT_PORT"

if [[ -n "$check" ]]; then
    node compare.mjs results/floodgate.json "$out/floodgate.json"
    node compare.mjs results/floodgate-strict.json "$out/floodgate-strict.json"
    exit 0
fi

baseline=()
if command -v nginx >/dev/null; then
    mkdir -p "$work/nginx"
    # nginx started as root runs its workers as another user, who must reach the cache.
    chmod a+x "$work" && chmod a+rwx "$work/nginx"
    sed -e "s|__DIR__|$work/nginx|g" -e "s|__PORT__|$NGINX_PORT|g" \
        -e "s|__ORIGIN__|127.0.0.1:$ORIGIN_PORT|g" nginx.conf >"$work/nginx/nginx.conf"
    nginx -v 2>&1 | sed 's/^/baseline: /' >&2
    nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
    pids+=($!)
    wait_port "$NGINX_PORT"
    run_suite nginx "http://127.0.0.1:$NGINX_PORT"
    baseline=(results/nginx.json)
else
    echo "nginx is not installed: scoring Floodgate alone" >&2
fi

node score.mjs results/floodgate.json "${baseline[@]}"
echo "strict (negative_statuses: []), against the defaults:" >&2
node score.mjs results/floodgate-strict.json results/floodgate.json
