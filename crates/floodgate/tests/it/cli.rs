//! The command line: `validate` with a table of broken configs (YAML syntax in plain words, misspelt
//! fields with a suggestion, type and cross-field errors) and the exact errors expected,
//! `explain`, and `schema` (which must match the committed docs/config.schema.json).

use std::process::Command;

fn floodgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args(args)
        .output()
        .expect("run floodgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

const VALID_HEAD: &str = "listeners:\n  - name: public\n    address: 127.0.0.1:8080\nupstreams:\n  app:\n    targets: [ \"127.0.0.1:9000\" ]\n";

/// (config text, expected error lines after the file name)
const BROKEN: &[(&str, &[&str])] = &[
    (
        "listeners:\n  - name: public\n    adress: 127.0.0.1:8080\n",
        &[
            "3:5: listeners[0].adress: unknown field `adress`; did you mean `address`?",
            "2:5: listeners[0]: missing field `address`",
        ],
    ),
    (
        // Decoding stops at the first type error inside one entry, but every entry is
        // decoded and unknown fields are always reported.
        "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n    timeouts: { idle: 5 }\n    limit: {}\n  - name: other\n    address: 127.0.0.1:8081\n    limits: { max_body_bytes: lots }\n",
        &[
            "4:23: listeners[0].timeouts.idle: expected a duration such as 250ms, 5s, 2m, 1h or 1h30m (units: us, ms, s, m, h, d), found the number 5 without a unit",
            "5:5: listeners[0].limit: unknown field `limit`; did you mean `limits`?",
            "8:31: listeners[1].limits.max_body_bytes: invalid size \"lots\": expected a number of bytes with an optional unit, such as 512, 16KiB, 10MiB or 1GB",
        ],
    ),
    (
        // Settings that would do nothing are refused, not ignored.
        "routes:\n  - match: { path_prefix: / }\n    upstream: app\n    rate_limits: [ { algorithm: gcra, rate: 1/s, on_redis_error: fail_closed, key: [ consumer ] } ]\n    circuit_breaker: { consecutive_failures: 3, max_keys: 10 }\n",
        &[
            "4:66: routes[0].rate_limits[0].on_redis_error: `on_redis_error` applies only to `scope: cluster` (a local limit never asks Redis)",
            "4:86: routes[0].rate_limits[0].key[0]: `consumer` needs the route's `auth`: without it no request has a consumer, and all would share one key",
            "5:59: routes[0].circuit_breaker.max_keys: `max_keys` applies only to `scope: key`",
        ],
    ),
    (
        "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n    criticality_header: x-criticality\n",
        &[
            "4:25: listeners[0].criticality_header: believed only from `trusted_proxies`, and this listener lists none: it would never be read",
        ],
    ),
    (
        // What only the runtime judges is refused by `validate` too, in place.
        "cluster: { redis: { url: \"redis://127.0.0.1:20379/abc\" } }\n",
        &["1:26: cluster.redis.url: not a usable Redis URL: invalid database number"],
    ),
    (
        "listeners:\n  - name: public\n    address: localhost:80\n",
        &["3:14: listeners[0].address: invalid socket address syntax"],
    ),
    (
        "routes:\n  - name: a\n    match: { path: \"/p/{id\" }\n    upstream: nope\n  - name: a\n    match: { methods: [get] }\n    upstream: app\n",
        &[
            "3:20: routes[0].match.path: segment \"{id\" of \"/p/{id\": a parameter must fill a whole segment, as in /items/{id}",
            "4:15: routes[0].upstream: no upstream named \"nope\" (defined: app)",
            "5:11: routes[1].name: duplicate route name \"a\" (also routes[0])",
            "6:24: routes[1].match.methods[0]: \"get\" is not an HTTP method (use upper case, e.g. GET)",
        ],
    ),
    (
        "routes:\n  - match: { path_prefix: api, path_regex: \"(\" }\n    upstream: app\n    redirect: { location: \"/x/{nope}\", status: 200 }\n",
        &[
            "2:5: routes[0]: give either `upstream` or `redirect`, not both",
            "2:12: routes[0].match: give at most one of `path`, `path_prefix` and `path_regex`",
            "2:27: routes[0].match.path_prefix: prefix \"api\" must start with `/`",
            "2:44: routes[0].match.path_regex: invalid regular expression: unclosed group",
        ],
    ),
    (
        "routes:\n  - upstream: ${FLOODGATE_TEST_UNSET_VAR}\n    match: { headers: [ { name: x, exact: a, present: true } ] }\n",
        &[
            "2:15: routes[0].upstream: environment variable FLOODGATE_TEST_UNSET_VAR is not set (write `${FLOODGATE_TEST_UNSET_VAR:-default}` to give a default)",
            "3:25: routes[0].match.headers[0]: give exactly one of `exact`, `regex` and `present`",
        ],
    ),
    (
        "upstreams:\n  other:\n    targets: [ \"no-port\", { address: \"h:1\", weight: 0 } ]\nlistener: []\n",
        &[
            "1:1: listeners: at least one listener is required",
            "3:16: upstreams.other.targets[0]: \"no-port\" is not host:port (examples: 127.0.0.1:9000, [::1]:9000, api.internal:80)",
            "3:53: upstreams.other.targets[1].weight: weight must be from 1 to 1000",
            "4:1: listener: unknown field `listener`; did you mean `listeners`?",
        ],
    ),
    (
        "listeners: [ { name: p, address: \"127.0.0.1:0\", trusted_proxies: [ \"10.0.0.0/33\" ] } ]\nupstreams: { b: { targets: [ \"h:1\" ] } }\nroutes:\n  - match: { path: \"/p/{id}\" }\n    upstream: b\n    rate_limits:\n      - { algorithm: fixed_window, rate: 10/s, burst: 5 }\n      - { algorithm: gcra, rate: 0/s, key: [ \"path:ident\", \"cookie:x\" ], scope: cluster }\n      - { algorithm: leaky_bucket, rate: 5/s, delay: 1, nodelay: true }\n      - { algorithm: token_bucket, rate: 5/s, per: 1s }\n    concurrency: { max_in_flight: 3, adaptive: {} }\n",
        &[
            "1:68: listeners[0].trusted_proxies[0]: \"10.0.0.0/33\" is not an IP address or CIDR block (such as 10.0.0.0/8)",
            "7:55: routes[0].rate_limits[0].burst: windows have no burst: the limit per window is `rate`",
            "8:34: routes[0].rate_limits[1].rate: a rate must allow at least 1 request per period",
            "8:46: routes[0].rate_limits[1].key[0]: the route's path has no parameter \"ident\" (it has id)",
            "8:60: routes[0].rate_limits[1].key[1]: invalid key part \"cookie:x\", expected `header:NAME`, `query:NAME` or `path:PARAM`",
            "8:81: routes[0].rate_limits[1].scope: `scope: cluster` needs a top-level `cluster` section with a Redis URL",
            "9:66: routes[0].rate_limits[2].nodelay: give either `delay` or `nodelay`, not both",
            "10:47: routes[0].rate_limits[3].per: unknown field `per`, expected one of `name`, `algorithm`, `rate`, `burst`, `delay`, `nodelay`, `max_delay`, `key`, `overrides`, `dry_run`, `scope`, `on_redis_error`, `max_keys`, `headers`",
            "11:18: routes[0].concurrency: give either `max_in_flight` or `adaptive`, not both",
        ],
    ),
    (
        "upstreams:\n  b:\n    targets: [ \"h:1\" ]\n    circuit_breaker: { scope: route, open_for: 5s, max_open_for: 1s, failure_on: [ 5xy ] }\nlisteners: [ { name: p, address: \"127.0.0.1:0\", criticality_header: \"bad header\" } ]\nroutes:\n  - match: { path: /a }\n    upstream: b\n    criticality: urgent\n",
        &[
            "4:22: upstreams.b.circuit_breaker: give at least one trip rule: `consecutive_failures`, `failure_rate` or `slow_call_rate`",
            "4:31: upstreams.b.circuit_breaker.scope: an upstream's breaker has scope `upstream` or `target`",
            "4:66: upstreams.b.circuit_breaker.max_open_for: must be at least `open_for`",
            "4:84: upstreams.b.circuit_breaker.failure_on[0]: unknown condition \"5xy\", expected `connect_error`, `reset`, `timeout`, a status such as `503` or a class such as `5xx`",
            "5:69: listeners[0].criticality_header: \"bad header\" is not a valid header name",
            "9:18: routes[0].criticality: unknown variant `urgent`, expected one of `sheddable`, `normal`, `high`, `critical`",
        ],
    ),
    (
        "routes:\n  - match: { path: \"/p/{id}\" }\n    upstream: app\n    circuit_breaker: { scope: key, key: [ \"path:nope\" ], failure_rate: 0%, half_open_calls: 0 }\n    fallback: { when: [], upstream: gone, response: { status: 99 } }\n    fault: { abort: { status: 200, share: 50% }, header: \"x y\" }\n",
        &[
            "4:43: routes[0].circuit_breaker.key[0]: the route's path has no parameter \"nope\" (it has id)",
            "4:72: routes[0].circuit_breaker.failure_rate: must be more than 0%",
            "4:93: routes[0].circuit_breaker.half_open_calls: must be at least 1",
            "5:15: routes[0].fallback: give either `response` or `upstream`, not both",
            "5:23: routes[0].fallback.when: list at least one condition",
            "5:37: routes[0].fallback.upstream: no upstream named \"gone\" (defined: app)",
            "5:63: routes[0].fallback.response.status: must be from 200 to 599",
            "6:31: routes[0].fault.abort.status: must be from 400 to 599",
            "6:58: routes[0].fault.header: \"x y\" is not a valid header name",
        ],
    ),
    (
        "cache: { memory: 512KiB, max_object_size: 0, shared: true }\nroutes:\n  - match: { path: \"/p/{id}\" }\n    upstream: app\n    cache: { negative_statuses: [ 404, 500 ], jitter: 60%, early_refresh: 11, coalesce_timeout: 0s, force_ttl: 0s, miss_rate_limits: [ { algorithm: token_bucket, rate: 1/s, key: [ \"path:nope\" ] } ], stale: 1s }\n  - match: { path: /r }\n    redirect: { location: /x }\n    cache: {}\n",
        &[
            "1:18: cache.memory: must be at least 1MiB",
            "1:43: cache.max_object_size: must be greater than zero",
            "1:54: cache.shared: a shared cache lives in the cluster's Redis: configure `cluster` too",
            "5:40: routes[0].cache.negative_statuses[1]: 500 cannot be cached; expected one of 404, 405, 410, 414, 501",
            "5:55: routes[0].cache.jitter: must be at most 50%",
            "5:75: routes[0].cache.early_refresh: must be from 0 to 10",
            "5:97: routes[0].cache.coalesce_timeout: must be greater than zero",
            "5:112: routes[0].cache.force_ttl: must be greater than zero",
            "5:181: routes[0].cache.miss_rate_limits[0].key[0]: the route's path has no parameter \"nope\" (it has id)",
            "5:200: routes[0].cache.stale: unknown field `stale`, expected one of `default_ttl`, `force_ttl`, `negative_statuses`, `negative_ttl`, `jitter`, `stale_while_revalidate`, `stale_if_error`, `ignore_client_no_cache`, `coalesce`, `coalesce_timeout`, `early_refresh`, `miss_rate_limits`",
            "8:12: routes[1].cache: `cache` has no effect on a redirect route",
        ],
    ),
    (
        "routes:\n  - match: { path: /orders }\n    upstream: app\n    idempotency: { methods: [ PUT ], ttl: 0s, memory: 1MiB, max_response_size: 1MiB, max_body_size: 0B, shared: true }\n  - match: { path: /r }\n    redirect: { location: /x }\n    idempotency: {}\n",
        &[
            "4:31: routes[0].idempotency.methods[0]: \"PUT\" is not a method idempotency keys apply to; expected POST or PATCH",
            "4:43: routes[0].idempotency.ttl: must be greater than zero",
            "4:80: routes[0].idempotency.max_response_size: must be at most a quarter of `memory`",
            "4:101: routes[0].idempotency.max_body_size: must be greater than zero",
            "4:113: routes[0].idempotency.shared: shared keys live in the cluster's Redis: configure `cluster` too",
            "7:18: routes[1].idempotency: `idempotency` has no effect on a redirect route",
        ],
    ),
    (
        "listeners: [ { name: p, address: \"127.0.0.1:0\" } ]\nupstreams:\n  g: { protocol: http2, targets: [ \"h:1\" ] }\nroutes:\n  - match: { path: /ws }\n    upstream: g\n    websocket: { origins: [ \"evil.example\", \"https://ok.example/\" ], max_tunnels: 0, idle_timeout: 0s }\n  - match: { path: /r }\n    redirect: { location: /x }\n    websocket: {}\n",
        &[
            "7:16: routes[0].websocket: upstream \"g\" speaks HTTP/2, which cannot carry a WebSocket upgrade: use an `http1` upstream for this route",
            "7:29: routes[0].websocket.origins[0]: \"evil.example\" is not an origin: expected `https://host[:port]` or `*`",
            "7:83: routes[0].websocket.max_tunnels: 0 lets no tunnel open: use `enabled: false` to refuse handshakes",
            "7:100: routes[0].websocket.idle_timeout: must be more than 0",
            "10:16: routes[1].websocket: `websocket` has no effect on a redirect route",
        ],
    ),
    (
        "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls: { certificates: [ { cert: /nonexistent.pem, key: Cargo.toml } ] }\n  - name: b\n    address: 127.0.0.1:2\n    redirect_to_https: { status: 303 }\n    tls: { certificates: [] }\n  - name: c\n    address: 127.0.0.1:3\n    hsts: {}\n  - name: d\n    address: 127.0.0.1:4\n    tls: { certificates: [], min_version: \"1.1\" }\n",
        &[
            "4:36: listeners[0].tls.certificates[0].cert: cannot read \"/nonexistent.pem\": I/O error: No such file or directory (os error 2)",
            "4:59: listeners[0].tls.certificates[0].key: \"Cargo.toml\" holds no readable PEM private key",
            "7:24: listeners[1].redirect_to_https: a TLS listener serves HTTPS itself; redirect from a cleartext listener",
            "7:34: listeners[1].redirect_to_https.status: 303 is not 301, 302, 307 or 308",
            "8:26: listeners[1].tls.certificates: give at least one `{ cert, key }`",
            "11:11: listeners[2].hsts: HSTS is only sent over HTTPS: give the listener `tls`",
            "14:43: listeners[3].tls.min_version: unknown variant `1.1`, expected `1.2` or `1.3`",
        ],
    ),
    (
        "consumers:\n  - { name: a, api_keys: [ plaintext-key ], basic: { username: \"u:1\", password_hash: \"$2b$12$bcrypt\" } }\n  - { name: a, groups: [ g ], api_keys: [ \"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\" ] }\nroutes:\n  - match: { path: /a }\n    upstream: app\n    auth: { consumers: [ zed ], groups: [ nobody ] }\n    ip: { allow: [ 10.0.0.0/40 ] }\n",
        &[
            "2:28: consumers[0].api_keys[0]: expected `sha256:` and the 64 hex digits of the key's SHA-256 (printf %s \"$KEY\" | sha256sum); never the key itself",
            "2:64: consumers[0].basic.username: a username is not empty and has no `:`",
            "2:86: consumers[0].basic.password_hash: expected an argon2id PHC string: $argon2id$v=19$m=…,t=…,p=…$salt$hash",
            "3:13: consumers[1].name: duplicate consumer \"a\" (also consumers[0])",
            "3:118: consumers[1].api_keys[1]: this key is listed twice",
            "7:11: routes[0].auth: give at least one method: `api_key`, `basic`, `jwt`, `introspection` or `client_certificate`",
            "7:26: routes[0].auth.consumers[0]: no consumer named \"zed\"",
            "7:43: routes[0].auth.groups[0]: no consumer is in group \"nobody\"",
            "8:20: routes[0].ip.allow[0]: \"10.0.0.0/40\" is not an IP address or CIDR block (such as 10.0.0.0/8)",
        ],
    ),
    (
        "routes:\n  - match: { path: /a }\n    upstream: app\n    auth:\n      jwt:\n        keys:\n          - { algorithm: HS256, secret: short }\n          - { algorithm: RS256, secret: \"a-shared-secret-of-at-least-32-bytes!\" }\n          - { algorithm: ES256, public_key_file: Cargo.toml }\n        jwks: { url: \"http://example.com/jwks\" }\n        claims_to_headers: { sub: \"x user\" }\n",
        &[
            "7:41: routes[0].auth.jwt.keys[0].secret: an HMAC secret needs at least 32 bytes",
            "8:13: routes[0].auth.jwt.keys[1]: RS*, PS*, ES* and EdDSA keys take `public_key_file` (and no `secret`)",
            "9:50: routes[0].auth.jwt.keys[2].public_key_file: \"Cargo.toml\" holds no PEM key",
            "10:22: routes[0].auth.jwt.jwks.url: expected an https:// URL (http:// only on loopback)",
            "11:35: routes[0].auth.jwt.claims_to_headers.sub: \"x user\" is not a valid header name",
        ],
    ),
    (
        "listeners: [\n  - name: x\n",
        &[
            "2:3: YAML syntax: a `- ` item inside `[ ... ]` or `{ ... }`: write a list either as `[a, b]` or as `- ` lines",
        ],
    ),
    (
        // YAML syntax, in plain words at the right place.
        "listeners:\n  - name: public\n    address: 127.0.0.1:8080\nroutes:\n  - match: { path_prefix: / }\n    upstream: app\n   name: dedented\n",
        &[
            "7:4: YAML syntax: this line is indented differently from the list items around it (a list item starts with `- ` at the list's indentation)",
        ],
    ),
    (
        "listeners:\n  - name: public\n    address: 127.0.0.1:8080\nupstreams:\n  app:\n    targets: [ \"127.0.0.1:9000\" ]\n   timeouts: { connect: 1s }\n",
        &[
            "7:4: YAML syntax: this line is indented differently from the keys around it, or a key lacks its `:`",
        ],
    ),
    (
        "listeners:\n  - name: public\n    address: 127.0.0.1:8080\nlisteners: []\n",
        &["4:1: YAML syntax: `listeners` appears twice in the same mapping; give each key once"],
    ),
    (
        "listeners:\n  - name: \"public\n",
        &["2:11: YAML syntax: a quoted string is not closed"],
    ),
    (
        "listeners:\n\t- name: x\n",
        &["2:2: YAML syntax: tabs cannot indent YAML; use spaces"],
    ),
    (
        "upstreams:\n  app:\n  targets: [ \"127.0.0.1:9000\" ]\n",
        &[
            "1:1: listeners: at least one listener is required",
            "2:6: upstreams.app: expected a mapping, found nothing (are the lines after it indented under it?)",
            "3:12: upstreams.targets: expected a mapping, found a list",
        ],
    ),
    (
        "routes:\n  - match: { path_prefix: / }\n    upstreem: app\n",
        &[
            "3:5: routes[0].upstreem: unknown field `upstreem`; did you mean `upstream`?",
            "2:5: routes[0]: a route needs `upstream`, `split` or `redirect`",
        ],
    ),
];

#[test]
fn validate_reports_every_error_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (body, expected)) in BROKEN.iter().enumerate() {
        // Cases that define their own listeners/upstreams stand alone; the rest get a valid head.
        let text = if body.starts_with("listeners") || body.starts_with("upstreams") {
            body.to_string()
        } else {
            format!("{VALID_HEAD}{body}")
        };
        let offset = if text.len() > body.len() {
            VALID_HEAD.lines().count()
        } else {
            0
        };
        let path = dir.path().join(format!("case{i}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let (code, _, stderr) = floodgate(&["validate", path.to_str().unwrap()]);
        assert_eq!(code, 1, "case {i} must fail:\n{text}");
        let prefix = format!("{}:", path.display());
        let got: Vec<String> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|l| !l.trim_start().ends_with("error(s)"))
            .map(|l| shift_line(l, offset))
            .collect();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort_by_key(|l| line_col(l));
        assert_eq!(got, want, "case {i}:\n{text}\nstderr:\n{stderr}");
    }
}

/// Rebases "L:C: ..." by the lines of the prepended valid head.
fn shift_line(l: &str, offset: usize) -> String {
    let (line, rest) = l.split_once(':').unwrap();
    let line: usize = line.parse().unwrap();
    format!("{}:{rest}", line - offset)
}

fn line_col(l: &str) -> (usize, usize) {
    let mut parts = l.splitn(3, ':');
    (
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().parse().unwrap(),
    )
}

#[test]
fn validate_accepts_the_examples() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("demo.yaml") {
            let (code, stdout, stderr) = floodgate(&["validate", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {stderr}", path.display());
            assert!(stdout.contains(": ok ("), "{stdout}");
        }
    }
}

#[test]
fn explain_names_the_route_and_what_happens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.yaml");
    let cfg = format!(
        "{VALID_HEAD}routes:\n  - name: catch-all\n    match: {{ path_prefix: / }}\n    upstream: app\n  - name: product\n    match: {{ path: \"/api/products/{{id}}\", methods: [GET] }}\n    upstream: app\n    rewrite: {{ path: \"/products/{{id}}\" }}\n    rate_limits:\n      - {{ name: per-id, algorithm: gcra, rate: 10/s, burst: 5, key: [ \"path:id\", client_ip ] }}\n    concurrency: {{ max_in_flight: 8, queue: 2 }}\n"
    );
    std::fs::write(&path, cfg).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = floodgate(&[
        "explain",
        "-c",
        p,
        "GET",
        "http://shop.test/api/products/42?x=1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route:     product (routes[1])"), "{out}");
    assert!(out.contains("params:  id=42"), "{out}");
    assert!(out.contains("upstream path: /products/42?x=1"), "{out}");
    assert!(out.contains("proxy to upstream \"app\""), "{out}");
    assert!(
        out.contains("rate limit \"per-id\": GCRA 10/1s per path:id+client_ip (burst 5)"),
        "{out}"
    );
    assert!(
        out.contains("route bulkhead: 8 in flight, queue 2 for 1s"),
        "{out}"
    );
    let (_, out, _) = floodgate(&[
        "explain",
        "-c",
        p,
        "POST",
        "http://shop.test/api/products/42",
    ]);
    assert!(out.contains("route:     catch-all (routes[0])"), "{out}");
    let (code, _, err) = floodgate(&["explain", "-c", p, "GET", "/relative"]);
    assert_eq!(code, 2);
    assert!(err.contains("absolute URL"), "{err}");
}

#[test]
fn explain_names_the_consumer_its_override_and_a_method_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.yaml");
    // sha256("k-alice")
    let digest = "8fab151ebfe45da0ce0c2a951f8bba063f8668389b08a793acf59f301a6dbd57";
    let cfg = format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:8080\" }} ]
consumers:
  - {{ name: alice, api_keys: [ \"sha256:{digest}\" ] }}
upstreams:
  checked:
    targets: [ \"127.0.0.1:9001\" ]
    health_check: {{ kind: tcp, interval: 5s }}
routes:
  - name: orders
    match: {{ path: /orders, methods: [POST] }}
    upstream: checked
    auth: {{ api_key: {{}} }}
    rate_limits:
      - {{ name: per-consumer, algorithm: token_bucket, rate: 10/s, key: [ consumer ], overrides: [ {{ value: alice, rate: 100/s }} ] }}
    circuit_breaker: {{ consecutive_failures: 3 }}
    cache: {{ jitter: 10% }}
"
    );
    std::fs::write(&path, cfg).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = floodgate(&[
        "explain",
        "-c",
        p,
        "POST",
        "http://shop.test/orders",
        "-H",
        "x-api-key: k-alice",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("consumer:  alice"), "{out}");
    assert!(
        out.contains("keys this request as \"alice\": the override 100/1s applies"),
        "{out}"
    );
    assert!(
        out.contains("health check: a TCP connect every 5s"),
        "{out}"
    );
    assert!(out.contains("opens on 3 failures in a row, open"), "{out}");
    assert!(!out.contains("at least 20 calls"), "{out}");
    assert!(out.contains("shortened at random by up to 10%"), "{out}");
    let (_, out, _) = floodgate(&[
        "explain",
        "-c",
        p,
        "POST",
        "http://shop.test/orders",
        "-H",
        "x-api-key: wrong",
    ]);
    assert!(out.contains("none -> 401 (api_key unknown_key"), "{out}");
    let (_, out, _) = floodgate(&["explain", "-c", p, "GET", "http://shop.test/orders"]);
    assert!(out.contains("none matches"), "{out}");
    assert!(
        out.contains(
            "route \"orders\" matches this request except its method: it takes POST, not GET"
        ),
        "{out}"
    );
}

#[test]
fn schema_matches_the_committed_copy() {
    let (code, out, _) = floodgate(&["schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(schema["properties"]["listeners"].is_object());
    assert!(schema["$defs"]["Route"]["properties"]["match"].is_object());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/config.schema.json"
    ))
    .expect("docs/config.schema.json exists: run `cargo run -- schema > docs/config.schema.json`");
    assert_eq!(
        out.trim(),
        committed.trim(),
        "docs/config.schema.json is stale: run `cargo run -- schema > docs/config.schema.json`"
    );
}

#[test]
fn a_missing_file_is_named_without_a_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.yaml");
    let (code, _, stderr) = floodgate(&["validate", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "{}: cannot read the file: No such file or directory (os error 2)",
            path.display()
        )
    );
}
