//! JWT validation through the binary, with keys and tokens made by an independent
//! implementation (PyJWT and cryptography, tests/it/peers/jwt_tokens.py): every algorithm
//! verifies; `alg: none`, HS256 keyed with an RSA public key, an algorithm the key does not
//! name, tampered, expired, early, wrong-issuer, wrong-audience and exp-less tokens are all
//! refused; claims reach the upstream as headers; scopes authorize; a JWKS is fetched and
//! fetched again when a token names a rotated-in key.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::{Response, StatusCode};

use crate::support::*;

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/peers");
const ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_pyjwt_for_every_algorithm_and_the_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let tokens = run_python(&format!(
        "import runpy, sys; sys.argv = ['jwt_tokens.py', {d:?}]; runpy.run_path('{PEERS}/jwt_tokens.py', run_name='__main__')"
    ));
    let tokens: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    let token = |name: &str| tokens[name].as_str().unwrap().to_owned();

    // The JWKS server: k1 until the rotation, then k1 and k2; counts fetches.
    let rotated = Arc::new(AtomicBool::new(false));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (r, f, jd) = (rotated.clone(), fetches.clone(), d.clone());
    let jwks = upstream(move |_req| {
        let (r, f, jd) = (r.clone(), f.clone(), jd.clone());
        async move {
            f.fetch_add(1, Ordering::SeqCst);
            let file = if r.load(Ordering::SeqCst) {
                "jwks-k2.json"
            } else {
                "jwks-k1.json"
            };
            Response::new(full(std::fs::read(format!("{jd}/{file}")).unwrap()))
        }
    })
    .await;
    let echo = echo_upstream().await;

    let mut keys = String::new();
    for alg in ALGORITHMS {
        if alg.starts_with("HS") {
            keys.push_str(&format!(
                "        - {{ kid: {alg}, algorithm: {alg}, secret: \"a-shared-secret-of-at-least-32-bytes!\" }}\n"
            ));
        } else {
            keys.push_str(&format!(
                "        - {{ kid: {alg}, algorithm: {alg}, public_key_file: \"{d}/{alg}.pem\" }}\n"
            ));
        }
    }
    let gw = gateway_with(
        &format!("  echo:\n    targets: [ \"{echo}\" ]"),
        &format!(
            "  - name: jwt
    match: {{ path: /jwt }}
    upstream: echo
    auth:
      jwt:
        issuer: https://issuer.test
        audience: [ shop ]
        claims_to_headers: {{ sub: x-user, scope: x-scope }}
        keys:
{keys}  - name: admin
    match: {{ path: /admin }}
    upstream: echo
    auth:
      scopes: [ admin ]
      claims: {{ iss: [ \"https://issuer.test\" ], sub: [ alice, bob ] }}
      jwt:
        issuer: https://issuer.test
        audience: [ shop ]
        keys:
          - {{ kid: ES256, algorithm: ES256, public_key_file: \"{d}/ES256.pem\" }}
  - name: jwks
    match: {{ path: /jwks }}
    upstream: echo
    auth:
      jwt:
        audience: [ shop ]
        jwks: {{ url: \"http://{jwks}/keys\", min_refetch: 0s }}
"
        ),
    );
    let bearer = |t: &str| format!("Bearer {t}");

    // Every algorithm verifies; the claims reach the upstream, a forged x-user does not.
    for alg in ALGORITHMS {
        let auth = bearer(&token(alg));
        let (s, _, b) = get_with(
            &gw.url("/jwt"),
            &[("authorization", &auth), ("x-user", "forged")],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{alg}");
        let echo = json(&b);
        assert_eq!(
            echo["headers"]["x-user"],
            serde_json::json!(["alice"]),
            "{alg}"
        );
        assert_eq!(echo["headers"]["x-scope"][0], "read admin");
        assert!(
            echo["headers"].get("authorization").is_none(),
            "the token is not forwarded"
        );
    }
    // No token, and every attack or invalid claim: 401 with a Bearer challenge.
    let (s, h, b) = get(&gw.url("/jwt")).await;
    assert_problem(s, &h, &b, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(h["www-authenticate"], "Bearer realm=\"floodgate\"");
    // Each refusal says why (RFC 6750 §3), is counted by reason, and logged with it.
    for (name, reason, description) in [
        ("none", "malformed", "The token is malformed."),
        (
            "confusion",
            "algorithm_not_accepted",
            "The token's algorithm is not one this route's keys accept.",
        ),
        (
            "wrong_alg",
            "algorithm_not_accepted",
            "The token's algorithm is not one this route's keys accept.",
        ),
        (
            "tampered",
            "bad_signature",
            "The token's signature does not verify.",
        ),
        ("expired", "expired", "The token has expired."),
        ("not_yet", "not_yet_valid", "The token is not valid yet."),
        (
            "wrong_iss",
            "wrong_issuer",
            "The token's issuer is not accepted.",
        ),
        (
            "wrong_aud",
            "wrong_audience",
            "The token's audience is not accepted.",
        ),
        (
            "no_exp",
            "missing_claim",
            "The token lacks a required claim.",
        ),
        (
            "crit",
            "unsupported_extension",
            "The token requires an extension (crit) that is not supported.",
        ),
        ("es512", "malformed", "The token is malformed."),
    ] {
        let auth = bearer(&token(name));
        let (s, h, b) = get_with(&gw.url("/jwt"), &[("authorization", &auth)]).await;
        let problem = assert_problem(s, &h, &b, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(problem["detail"], description, "{name}");
        assert_eq!(
            h["www-authenticate"],
            format!(
                "Bearer realm=\"floodgate\", error=\"invalid_token\", error_description=\"{description}\""
            ),
            "{name}"
        );
        let line = gw
            .wait_log(&format!("\"reason\":\"{reason}\""))
            .unwrap_or_else(|| panic!("{name}: no log line for {reason}"));
        assert!(line.contains("\"authentication refused\""), "{line}");
        assert!(line.contains("\"request_id\""), "{line}");
    }
    assert_eq!(
        gw.metric("floodgate_auth_refusals_total{route=\"jwt\",method=\"jwt\",reason=\"expired\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric(
            "floodgate_auth_refusals_total{route=\"jwt\",method=\"jwt\",reason=\"algorithm_not_accepted\"}"
        )
        .await,
        2.0
    );
    // Within the 60 s leeway, an expired token still passes.
    let auth = bearer(&token("within_leeway"));
    assert_eq!(
        get_with(&gw.url("/jwt"), &[("authorization", &auth)])
            .await
            .0,
        StatusCode::OK
    );

    // Scopes: alice's token has `admin`; bob's only `read`.
    let auth = bearer(&token("ES256"));
    assert_eq!(
        get_with(&gw.url("/admin"), &[("authorization", &auth)])
            .await
            .0,
        StatusCode::OK
    );
    // Claims: carol has the scope, but the route lists only alice and bob.
    let auth = bearer(&token("admin_not_listed"));
    let (s, h, b) = get_with(&gw.url("/admin"), &[("authorization", &auth)]).await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "forbidden");
    let auth = bearer(&token("no_admin_scope"));
    let (s, h, b) = get_with(&gw.url("/admin"), &[("authorization", &auth)]).await;
    assert_problem(s, &h, &b, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(
        h["www-authenticate"],
        "Bearer realm=\"floodgate\", error=\"insufficient_scope\", scope=\"admin\""
    );

    // JWKS: fetched on first use; a token for a key rotated in later triggers a new fetch.
    let auth = bearer(&token("jwks_k1"));
    assert_eq!(
        get_with(&gw.url("/jwks"), &[("authorization", &auth)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let k2 = bearer(&token("jwks_k2"));
    assert_eq!(
        get_with(&gw.url("/jwks"), &[("authorization", &k2)])
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "k2 is not published yet"
    );
    rotated.store(true, Ordering::SeqCst);
    let (s, _, b) = get_with(&gw.url("/jwks"), &[("authorization", &k2)]).await;
    assert_eq!(s, StatusCode::OK, "k2 after the rotation");
    assert!(json(&b)["headers"].get("x-user").is_none());
    // The first use, then one for k2 before the rotation and one after.
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
    // A known key needs no fetch.
    let before = fetches.load(Ordering::SeqCst);
    assert_eq!(
        get_with(&gw.url("/jwks"), &[("authorization", &auth)])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(fetches.load(Ordering::SeqCst), before);
    // No token is written to the gateway's log.
    let log = gw.log();
    for alg in ALGORITHMS {
        assert!(!log.contains(&token(alg)), "{alg} token logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_jwks_stops_verifying_at_the_next_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let tokens = run_python(&format!(
        "import runpy, sys; sys.argv = ['jwt_tokens.py', {d:?}]; runpy.run_path('{PEERS}/jwt_tokens.py', run_name='__main__')"
    ));
    let tokens: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    // The JWKS lists k1 until it is retired, then only k2; fetches are counted.
    let retired = Arc::new(AtomicBool::new(false));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (r, f, jd) = (retired.clone(), fetches.clone(), d.clone());
    let jwks = upstream(move |_req| {
        let (r, f, jd) = (r.clone(), f.clone(), jd.clone());
        async move {
            let file = if r.load(Ordering::SeqCst) {
                "jwks-k2-only.json"
            } else {
                "jwks-k1.json"
            };
            let resp = Response::new(full(std::fs::read(format!("{jd}/{file}")).unwrap()));
            f.fetch_add(1, Ordering::SeqCst);
            resp
        }
    })
    .await;
    let echo = echo_upstream().await;
    let gw = gateway_with(
        &format!("  echo:\n    targets: [ \"{echo}\" ]"),
        &format!(
            "  - match: {{ path: /jwks }}
    upstream: echo
    auth:
      jwt:
        audience: [ shop ]
        jwks: {{ url: \"http://{jwks}/keys\", refresh: 300ms, min_refetch: 0s }}
"
        ),
    );
    let k1 = format!("Bearer {}", tokens["jwks_k1"].as_str().unwrap());
    let url = gw.url("/jwks");
    let headers = [("authorization", k1.as_str())];
    let call = || get_with(&url, &headers);
    assert_eq!(call().await.0, StatusCode::OK);
    assert_eq!(call().await.0, StatusCode::OK, "remembered");
    retired.store(true, Ordering::SeqCst);
    // Once `refresh` has passed, a request starts the next fetch (it may still be answered
    // with the old set); after that fetch, the remembered token is no longer honoured.
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let before = fetches.load(Ordering::SeqCst);
    let _ = call().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while fetches.load(Ordering::SeqCst) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no fetch after refresh"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The fetch is counted as it is answered; give the gateway the moment to store it.
    let deadline = std::time::Instant::now() + PATIENCE;
    while call().await.0 != StatusCode::UNAUTHORIZED {
        assert!(
            std::time::Instant::now() < deadline,
            "a token of a retired key still passes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
