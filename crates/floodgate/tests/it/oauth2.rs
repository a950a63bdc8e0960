//! The built-in OAuth2 token endpoint, driven by an independent client (Authlib, in the
//! test venv: tests/it/peers/oauth2_client.py): it obtains a token with the client
//! credentials grant, calls a protected route with it, and PyJWT verifies the token with
//! the gateway's JWKS; wrong secrets, grants and scopes get the errors of RFC 6749 §5.2.
//! Once with a P-256 key (ES256) and client_secret_basic, once with Ed25519 (EdDSA) and
//! client_secret_post.

use crate::support::*;

const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/peers");
const SECRET: &str = "s3cret-client-secret-7d1e";

async fn round(curve: &str, method: &str, alg: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("signing.pem");
    let secret_hash = run_python(&format!(
        "from cryptography.hazmat.primitives import serialization as s\n\
         from cryptography.hazmat.primitives.asymmetric import ec, ed25519\n\
         from argon2 import PasswordHasher\n\
         k = ec.generate_private_key(ec.SECP256R1()) if {curve:?} == 'P-256' else ed25519.Ed25519PrivateKey.generate()\n\
         open({key:?}, 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()))\n\
         print(PasswordHasher().hash({SECRET:?}))",
        key = key_file.display().to_string(),
    ));
    let echo = echo_upstream().await;
    let gw = Gateway::start(&format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ output: \"{{dir}}/access.log\" }}
oauth2:
  issuer: https://gw.test
  signing_key_file: {key}
  clients:
    - {{ id: svc-a, secret_hash: \"{secret_hash}\", scopes: [ read, write ] }}
upstreams:
  echo:
    targets: [ \"{echo}\" ]
routes:
  - name: api
    match: {{ path: /api }}
    upstream: echo
    auth: {{ jwt: {{ local_issuer: true }}, scopes: [ read ] }}
  - name: admin
    match: {{ path: /admin }}
    upstream: echo
    auth: {{ jwt: {{ local_issuer: true }}, scopes: [ admin ] }}
",
        key = key_file.display(),
    ));
    let base = format!("http://{}", gw.addr());
    let out = run_python(&format!(
        "import runpy, sys; sys.argv = ['oauth2_client.py', {base:?}, 'svc-a', {SECRET:?}, {method:?}]; runpy.run_path('{PEERS}/oauth2_client.py', run_name='__main__')"
    ));
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["token"]["token_type"], "Bearer", "{out}");
    assert_eq!(out["token"]["expires_in"], 900);
    assert_eq!(out["token"]["scope"], "read");
    assert_eq!(out["alg"], alg);
    assert_eq!(out["api"], 200, "the token opens the route");
    assert_eq!(out["admin"], 403, "but not one needing a scope it lacks");
    assert_eq!(out["claims"]["sub"], "svc-a");
    assert_eq!(out["claims"]["aud"], "https://gw.test");
    assert_eq!(
        out["bad_secret"],
        serde_json::json!([401, "invalid_client", "no-store"])
    );
    assert_eq!(
        out["bad_grant"],
        serde_json::json!([400, "unsupported_grant_type", "no-store"])
    );
    assert_eq!(
        out["bad_scope"],
        serde_json::json!([400, "invalid_scope", "no-store"])
    );
    assert_eq!(out["get"], 405);
    let line = gw.access_line("\"route\":\"api\"").await;
    assert_eq!(line["consumer"], "svc-a");
    let log = std::fs::read_to_string(gw.dir.path().join("access.log")).unwrap() + &gw.log();
    assert!(!log.contains(SECRET), "the client secret was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_client_gets_a_token_and_uses_it() {
    round("P-256", "client_secret_basic", "ES256").await;
    round("Ed25519", "client_secret_post", "EdDSA").await;
}
