//! Consumers, API keys, Basic authentication and authorization through the binary.
//! Password hashes come from an independent implementation (Python's argon2-cffi, in the
//! venv tests/it/support.rs makes), with different parameters, and must verify; API key
//! digests from Python's hashlib. Credentials never reach the upstream or the logs.

use http::StatusCode;

use crate::support::*;

const ALICE_KEY: &str = "ak_7f3c9e0d5b2a41e8a6f4c1d9e2b7a5c3";
const BOB_KEY: &str = "ak_0b8e4d2c6a9f47138e5d3c1b9a7f2e6d";
const ALICE_PASSWORD: &str = "correct horse battery staple";
const BOB_PASSWORD: &str = "Tr0ub4dor&3";

fn basic(user: &str, password: &str) -> String {
    // Base64 by Python too: an independent encoder.
    let encoded = run_python(&format!(
        "import base64; print(base64.b64encode({:?}.encode()).decode())",
        format!("{user}:{password}")
    ));
    format!("Basic {encoded}")
}

fn config(upstream: std::net::SocketAddr) -> String {
    // argon2-cffi's defaults for alice; other parameters (t=2, m=19 MiB, p=1) for bob.
    let hashes = run_python(&format!(
        "from argon2 import PasswordHasher\n\
         print(PasswordHasher().hash({ALICE_PASSWORD:?}))\n\
         print(PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash({BOB_PASSWORD:?}))"
    ));
    let mut hashes = hashes.lines();
    let (alice_hash, bob_hash) = (hashes.next().unwrap(), hashes.next().unwrap());
    assert!(bob_hash.contains("m=19456,t=2,p=1"), "{bob_hash}");
    let digests = run_python(&format!(
        "import hashlib\nfor k in [{ALICE_KEY:?}, {BOB_KEY:?}]: print(hashlib.sha256(k.encode()).hexdigest())"
    ));
    let mut digests = digests.lines();
    let (alice_digest, bob_digest) = (digests.next().unwrap(), digests.next().unwrap());
    format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ output: \"{{dir}}/access.log\" }}
consumers:
  - name: alice
    groups: [ staff ]
    api_keys: [ \"sha256:{alice_digest}\" ]
    basic: {{ username: alice, password_hash: \"{alice_hash}\" }}
  - name: bob
    groups: [ partners ]
    api_keys: [ \"sha256:{bob_digest}\" ]
    basic: {{ username: bob, password_hash: \"{bob_hash}\" }}
upstreams:
  echo:
    targets: [ \"{upstream}\" ]
routes:
  - name: keys
    match: {{ path: /keys }}
    upstream: echo
    auth: {{ api_key: {{}} }}
  - name: query
    match: {{ path: /query }}
    upstream: echo
    auth: {{ api_key: {{ query: api_key }} }}
  - name: basic
    match: {{ path: /basic }}
    upstream: echo
    auth: {{ basic: {{ realm: shop }} }}
  - name: staff
    match: {{ path: /staff }}
    upstream: echo
    auth: {{ api_key: {{}}, basic: {{}}, groups: [ staff ] }}
  - name: both
    match: {{ path: /both }}
    upstream: echo
    auth: {{ require: all, api_key: {{}}, basic: {{}} }}
  - name: office
    match: {{ path: /office }}
    upstream: echo
    ip: {{ allow: [ 10.0.0.0/8 ] }}
  - name: local
    match: {{ path: /local }}
    upstream: echo
    ip: {{ deny: [ 10.0.0.0/8 ] }}
  - name: metered
    match: {{ path: /metered }}
    upstream: echo
    auth: {{ api_key: {{}} }}
    rate_limits: [ {{ algorithm: token_bucket, rate: 1/1m, burst: 1, key: [ consumer ] }} ]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_basic_auth_and_authorization() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&config(up));
    let url = |p: &str| gw.url(p);

    // API key in a header; none or a wrong one is a 401 with a challenge.
    let (s, h, b) = get(&url("/keys")).await;
    assert_problem(s, &h, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h["www-authenticate"], "ApiKey header=\"x-api-key\"");
    let (s, h, b) = get_with(&url("/keys"), &[("x-api-key", "ak_wrong")]).await;
    let problem = assert_problem(s, &h, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(problem["detail"], "The API key is not known.");
    assert_eq!(h["www-authenticate"], "ApiKey header=\"x-api-key\"");
    assert_eq!(
        gw.metric("floodgate_auth_refusals_total{route=\"keys\",method=\"api_key\",reason=\"unknown_key\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric(
            "floodgate_auth_refusals_total{route=\"keys\",method=\"none\",reason=\"missing\"}"
        )
        .await,
        1.0
    );
    let (s, _, b) = get_with(&url("/keys"), &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        json(&b)["headers"].get("x-api-key").is_none(),
        "the key is not forwarded"
    );

    // API key in the query string.
    let (s, _, _) = get(&url(&format!("/query?api_key={BOB_KEY}&x=1"))).await;
    assert_eq!(s, StatusCode::OK);

    // Basic, with hashes from argon2-cffi under two sets of parameters.
    let (s, h, _) = get(&url("/basic")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h["www-authenticate"],
        "Basic realm=\"shop\", charset=\"UTF-8\""
    );
    let wrong = basic("alice", "not her password");
    let (s, h, b) = get_with(&url("/basic"), &[("authorization", &wrong)]).await;
    let problem = assert_problem(s, &h, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(problem["detail"], "The user name or password is wrong.");
    let line = gw
        .wait_log("\"reason\":\"wrong_password\"")
        .expect("the refusal is logged with its reason");
    assert!(line.contains("\"method\":\"basic\""), "{line}");
    let alice = basic("alice", ALICE_PASSWORD);
    let (s, _, b) = get_with(&url("/basic"), &[("authorization", &alice)]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(json(&b)["headers"].get("authorization").is_none());
    let bob = basic("bob", BOB_PASSWORD);
    assert_eq!(
        get_with(&url("/basic"), &[("authorization", &bob)]).await.0,
        StatusCode::OK
    );
    let wrong = basic("bob", ALICE_PASSWORD);
    assert_eq!(
        get_with(&url("/basic"), &[("authorization", &wrong)])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let nobody = basic("carol", ALICE_PASSWORD);
    assert_eq!(
        get_with(&url("/basic"), &[("authorization", &nobody)])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Groups: alice (staff) passes by either method; bob (partners) is authenticated but
    // forbidden.
    assert_eq!(
        get_with(&url("/staff"), &[("x-api-key", ALICE_KEY)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get_with(&url("/staff"), &[("authorization", &alice)])
            .await
            .0,
        StatusCode::OK
    );
    let (s, h, b) = get_with(&url("/staff"), &[("x-api-key", BOB_KEY)]).await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "forbidden");

    // `all`: both methods, for the same consumer.
    assert_eq!(
        get_with(&url("/both"), &[("x-api-key", ALICE_KEY)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(
            &url("/both"),
            &[("x-api-key", ALICE_KEY), ("authorization", &alice)]
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        get_with(
            &url("/both"),
            &[("x-api-key", BOB_KEY), ("authorization", &alice)]
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED,
        "two consumers are not one"
    );

    // IP rules (the client is 127.0.0.1).
    let (s, h, b) = get(&url("/office")).await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(get(&url("/local")).await.0, StatusCode::OK);

    // The consumer is a rate-limit key: each has their own allowance.
    assert_eq!(
        get_with(&url("/metered"), &[("x-api-key", ALICE_KEY)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get_with(&url("/metered"), &[("x-api-key", ALICE_KEY)])
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get_with(&url("/metered"), &[("x-api-key", BOB_KEY)])
            .await
            .0,
        StatusCode::OK
    );

    // The access log names the consumer and never holds a credential.
    let line = gw.access_line("\"path\":\"/query").await;
    assert_eq!(line["consumer"], "bob");
    assert_eq!(line["path"], "/query?api_key=REDACTED&x=1");
    let log = std::fs::read_to_string(gw.dir.path().join("access.log")).unwrap() + &gw.log();
    for secret in [
        ALICE_KEY,
        BOB_KEY,
        ALICE_PASSWORD,
        BOB_PASSWORD,
        &alice,
        &bob,
    ] {
        assert!(!log.contains(secret), "{secret:?} was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_gateway_consumed_reaches_no_upstream_mirror_or_fallback() {
    // Every request any upstream receives, as its target.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let recorder = upstream(move |req: http::Request<hyper::body::Incoming>| {
        record.lock().unwrap().push(req.uri().to_string());
        async move { http::Response::new(full("ok")) }
    })
    .await;
    let digest = run_python(&format!(
        "import hashlib; print(hashlib.sha256({ALICE_KEY:?}.encode()).hexdigest())"
    ));
    let down = closed_port();
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
consumers:
  - {{ name: alice, api_keys: [ \"sha256:{digest}\" ] }}
upstreams:
  main: {{ targets: [ \"{recorder}\" ] }}
  copies: {{ targets: [ \"{recorder}\" ] }}
  down: {{ targets: [ \"{down}\" ] }}
routes:
  - name: query
    match: {{ path: /query }}
    upstream: main
    mirror: {{ upstream: copies }}
    auth: {{ api_key: {{ query: key }} }}
  - name: rescued
    match: {{ path: /rescued }}
    upstream: down
    fallback: {{ when: [ upstream_error ], upstream: main }}
    auth: {{ api_key: {{ query: key }} }}
  - name: kept
    match: {{ path: /kept }}
    upstream: main
    auth: {{ api_key: {{ query: key }}, hide_credentials: false }}
"
    ));
    let (s, _, _) = get(&gw.url(&format!("/query?a=1&key={ALICE_KEY}&b=2"))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get(&gw.url(&format!("/rescued?key={ALICE_KEY}"))).await;
    assert_eq!(s, StatusCode::OK);
    // The mirror's copy goes out in the background: wait for it.
    let deadline = std::time::Instant::now() + PATIENCE;
    while seen.lock().unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut targets = seen.lock().unwrap().clone();
    targets.sort();
    assert_eq!(targets, ["/query?a=1&b=2", "/query?a=1&b=2", "/rescued"]);
    // Unless the route says to pass it on.
    let (s, _, _) = get(&gw.url(&format!("/kept?key={ALICE_KEY}"))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        seen.lock()
            .unwrap()
            .contains(&format!("/kept?key={ALICE_KEY}"))
    );
}
