//! CORS in a real browser: Debian's chromium, driven by playwright-core
//! (tests/it/peers/cors_browser.js), loads a page from one origin and fetches through
//! Floodgate on another. From an allowed origin a simple request and a preflighted PUT
//! with a custom header succeed (and the page can read the exposed `X-Request-Id`), a
//! method the policy does not allow is blocked; from another origin everything is
//! blocked by the browser.

use http::Response;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_obeys_the_gateways_cors_answers() {
    let (allowed, denied) = (html_page().await, html_page().await);
    // Every request the api receives: its method and Origin.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let record = seen.clone();
    let api = upstream(move |req: http::Request<hyper::body::Incoming>| {
        let origin = req
            .headers()
            .get("origin")
            .map(|o| o.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default();
        record
            .lock()
            .unwrap()
            .push((req.method().to_string(), origin));
        async move { Response::new(full(format!("{} from the api", req.method()))) }
    })
    .await;
    let gw = gateway_with(
        &format!("  api:\n    targets: [ \"{api}\" ]"),
        &format!(
            "  - name: api
    match: {{ path_prefix: /api }}
    upstream: api
    cors:
      allow_origins: [ \"http://{allowed}\" ]
      allow_methods: [ GET, PUT ]
      allow_headers: [ x-token, content-type ]
      expose_headers: [ x-request-id ]
      allow_credentials: true"
        ),
    );
    let r = browser_compare("cors_browser.js", allowed, denied, &gw.url("/api/items"));
    let a = &r["allowed"];
    assert_eq!(a["simple"]["status"], 200, "{r}");
    assert_eq!(a["simple"]["body"], "GET from the api");
    assert!(
        a["simple"]["rid"].is_string(),
        "the exposed header is readable: {r}"
    );
    assert_eq!(a["preflighted"]["status"], 200, "{r}");
    assert_eq!(a["preflighted"]["body"], "PUT from the api");
    assert!(
        a["delete"]["error"].is_string(),
        "DELETE is not allowed: {r}"
    );
    for name in ["simple", "preflighted", "delete"] {
        assert!(
            r["denied"][name]["error"].is_string(),
            "{name} from another origin: {r}"
        );
    }
    // What reached the api: the allowed origin's GET and PUT, and the other origin's
    // simple GET (a browser sends it and only hides the answer); never a request whose
    // preflight the gateway refused (the DELETE, the other origin's PUT).
    let (allowed_origin, denied_origin) = (format!("http://{allowed}"), format!("http://{denied}"));
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let mut want = vec![
        ("GET".to_owned(), allowed_origin.clone()),
        ("GET".to_owned(), denied_origin),
        ("PUT".to_owned(), allowed_origin),
    ];
    want.sort();
    assert_eq!(got, want, "{r}");
}
