//! `floodgate demo`: the gateway on the embedded demo config (`examples/demo.yaml`, compiled
//! into the binary) in front of the built-in catalog service. Each capability adds its part
//! to the demo config and to the list of things to try printed at start.

mod catalog;
mod echo;

use std::process::ExitCode;

use crate::cli::DemoArgs;
use crate::{logging, run};

/// The demo config, compiled in.
const DEMO_CONFIG: &str = include_str!("../../../../examples/demo.yaml");

pub(crate) fn run(args: &DemoArgs) -> ExitCode {
    logging::init();
    if !(0.0..=1.0).contains(&args.flaky_rate) {
        eprintln!("--flaky-rate must be from 0.0 to 1.0");
        return ExitCode::from(2);
    }
    let mut instances = Vec::new();
    for instance in 1..=3 {
        match catalog::start(catalog::Catalog {
            flaky_rate: args.flaky_rate,
            instance,
            degraded: instance == 3,
            orders: Default::default(),
        }) {
            Ok(addr) => instances.push(addr),
            Err(e) => {
                eprintln!("cannot start the demo catalog: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let catalog = instances[0];
    // A signing key for the token endpoint, made now and kept in a private temporary file.
    let key_file = std::env::temp_dir().join(format!("floodgate-demo-{}.pem", std::process::id()));
    let written = floodgate_proxy::auth::oauth2::generate_p256_pem().and_then(|pem| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_file)
            .and_then(|mut f| f.write_all(pem.as_bytes()))
            .map_err(|e| format!("{}: {e}", key_file.display()))
    });
    if let Err(e) = written {
        eprintln!("cannot make the demo signing key: {e}");
        return ExitCode::from(1);
    }
    let vars = [
        ("DEMO_SIGNING_KEY", key_file.display().to_string()),
        ("DEMO_CATALOG", catalog.to_string()),
        ("DEMO_CATALOG_2", instances[1].to_string()),
        ("DEMO_CATALOG_3", instances[2].to_string()),
        ("DEMO_PORT", args.port.to_string()),
        ("DEMO_ADMIN_PORT", args.admin_port.to_string()),
    ];
    let env = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let cfg = match floodgate_config::load_str_with(
        "<demo>",
        DEMO_CONFIG,
        &env,
        &floodgate_proxy::startup::checks,
    ) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("the embedded demo config is broken:\n{errors}");
            return ExitCode::from(1);
        }
    };
    let code = run::run_config(cfg, None, |started| {
        let gw = started
            .listeners
            .first()
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        println!(
            "{}",
            banner(
                &gw,
                &started.admin.to_string(),
                &catalog.to_string(),
                args.flaky_rate
            )
        );
    });
    let _gone = std::fs::remove_file(&key_file);
    code
}

/// What the demo prints at start: its addresses, then things to try. Every command line is
/// indented two spaces (its continuation lines four) and every one is run, in order, by
/// the demo test (tests/it/demo.rs), which checks that it does what its note says.
fn banner(gw: &str, admin: &str, catalog: &str, flaky_rate: f64) -> String {
    let n = catalog::PRODUCTS;
    let pct = (flaky_rate * 100.0).round();
    format!(
        "\nFloodgate demo is running.\n\
         \n  gateway   http://{gw}\
         \n  admin     http://{admin}/metrics   (also /healthz, /readyz, /status, /breakers, /cache)\
         \n  catalog   http://{catalog}   (the demo upstream, {n} products; two more instances, the third degraded)\n\
         \nTry:\
         \n  curl -i http://{gw}/api/products/42            # proxied, rewritten to /products/42\
         \n  curl -i 'http://{gw}/api/products?limit=3'     # a page of products\
         \n  curl -i http://{gw}/api/products/99999         # no such id: 404 from the gateway's existence filter\
         \n  curl -s -o /dev/null -D - http://{gw}/api/products/42 | grep -i cache-status   # again: a hit\
         \n  curl -s -X POST http://{admin}/cache/purge -d '{{\"tag\": \"product-42\"}}'   # purge by tag\
         \n  curl -i -X POST -H 'Idempotency-Key: \"order-1\"' http://{gw}/api/orders   # 201: order made\
         \n  curl -i -X POST -H 'Idempotency-Key: \"order-1\"' http://{gw}/api/orders   # again: replayed, not made twice\
         \n  curl -i http://{gw}/api/flaky                  # fails {pct}% of the time (upstream 503)\
         \n  curl -i 'http://{gw}/api/slow?delay=3s'        # upstream slower than the 2s timeout: 504\
         \n  curl -i http://{gw}/v1/products/7              # old API path: 301 redirect\
         \n  curl -i http://{gw}/nowhere                    # no route: 404 problem+json\
         \n  curl -si --max-time 1 -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \\\
         \n    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' http://{gw}/ws/echo   # 101: a WebSocket tunnel to an echo\
         \n  curl -s http://{admin}/metrics | grep floodgate_requests\n\
         \nBalancing over three catalog instances (least request), on uncached pages; the third\
         \nfails half its product requests, which retries hide (every answer is a 200) and outlier\
         \ndetection ejects after three failures in a row (then the third gets nothing for 10s):\
         \n  for i in $(seq 60); do curl -s -o /dev/null -w '%{{http_code}} from instance %header{{x-catalog-instance}}\\n' \\\
         \n    \"http://{gw}/api/products?offset=$i&limit=1\"; done | sort | uniq -c   # all 200; the third's share shrinks\
         \n  curl -s http://{admin}/metrics | grep -E 'upstream_(responses|retries|ejections)_total' | grep -v ' 0$'\n\
         \nRate limits, one route per algorithm under /limited/ (token-bucket, gcra, leaky-bucket,\
         \nfixed-window, sliding-log, sliding-window): watch the 429s and their RateLimit fields.\
         \n  for i in $(seq 6); do curl -s -o /dev/null -D - http://{gw}/limited/token-bucket \\\
         \n    | grep -iE '^(HTTP|ratelimit|retry-after)'; done     # 3 pass (the burst), then 429\
         \n  for i in $(seq 8); do curl -s -o /dev/null -w '%{{http_code}} after %{{time_total}}s\\n' \\\
         \n    http://{gw}/limited/leaky-bucket & done; wait        # leaky bucket: 1 now, 3 queued at 2/s, 4 get 429\
         \n  for i in $(seq 6); do curl -s -o /dev/null -w '%{{http_code}} ' \\\
         \n    'http://{gw}/limited/slow?delay=1500ms' & done; wait; echo   # bulkhead: 2 run, 2 wait, 2 get 503\
         \n  curl -s http://{admin}/metrics | grep -E 'ratelimit_decisions|concurrency_'\n\
         \nA circuit breaker guards /api/flaky and /api/slow: three failures in a row open it (the\
         \nfailures of the /api/flaky and /api/slow calls above count), and for 5s the route answers\
         \nits fallback (see the Floodgate-Fallback header); then two probes close it again, or one\
         \nfailure reopens it for longer:\
         \n  for i in $(seq 6); do curl -s -o /dev/null -D - 'http://{gw}/api/slow?delay=3s' \\\
         \n    | grep -iE '^(HTTP|floodgate-fallback)'; done      # 504 until three in a row, then the fallback\
         \n  curl -s http://{admin}/breakers; echo               # state, counts, time to half-open\
         \n  sleep 5; curl -s http://{gw}/api/slow; echo; curl -s http://{gw}/api/slow; echo   # probes: closed\
         \n  curl -s http://{admin}/metrics | grep circuit_breaker\n\
         \nMachine-to-machine auth: Floodgate issues tokens (OAuth2 client credentials) and checks\
         \nthem on /secure (scope catalog:read; the client id reaches the catalog as X-Client):\
         \n  curl -i http://{gw}/secure/products/1                      # 401: no token\
         \n  TOKEN=$(curl -s -u demo-client:demo-secret -d grant_type=client_credentials \\\
         \n    http://{gw}/oauth2/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')\
         \n  curl -i -H \"Authorization: Bearer $TOKEN\" http://{gw}/secure/products/1\
         \n  curl -s http://{gw}/.well-known/jwks.json; echo            # the key to check tokens\n\
         \nAccess log lines follow on stdout. Ctrl-C stops.\n"
    )
}
