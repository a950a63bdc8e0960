//! The host a request names (crates/floodgate-proxy/src/host.rs): never a panic, and a host
//! that passes is visible ASCII with no userinfo, path or space, and routes on a name
//! without its port.
#![no_main]

use floodgate_proxy::host::{of_request, routing_name};
use http::{HeaderMap, HeaderValue, Uri, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, value);
    let uri = Uri::from_static("/");
    if let Ok(host) = of_request(&uri, Version::HTTP_11, &headers) {
        let text = host.to_str().expect("a valid host is text");
        assert!(
            !text.contains(['@', '/', ' ', '"', '\\', '?', '#']),
            "{text:?}"
        );
        let name = routing_name(text);
        assert!(!name.is_empty());
    }
});
