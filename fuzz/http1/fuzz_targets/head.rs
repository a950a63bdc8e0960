//! Request and response heads (crates/floodgate-http1/src/head.rs): never a panic, and a
//! head that passes ended in a blank line, has no bare LF, and a framing its fields state
//! one way only.
#![no_main]

use floodgate_http1::Framing;
use floodgate_http1::head::{HeadLimits, parse_request, parse_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits {
        max_bytes: 8192,
        max_fields: 64,
    };
    if let Ok(Some((head, len))) = parse_request(data, &limits) {
        let raw = &data[..len];
        assert!(raw.ends_with(b"\r\n\r\n"));
        assert!(
            raw.iter()
                .enumerate()
                .all(|(i, &b)| b != b'\n' || (i > 0 && raw[i - 1] == b'\r'))
        );
        let lengths = head.headers.get_all("content-length").iter().count();
        let codings = head.headers.get_all("transfer-encoding").iter().count();
        match head.framing {
            Framing::Chunked => assert!(lengths == 0 && codings == 1),
            Framing::Length(_) => assert!(lengths == 1 && codings == 0),
            Framing::Empty => assert!(codings == 0 && lengths <= 1),
            Framing::UntilClose => panic!("a request is never close-delimited"),
        }
        assert!(head.headers.get_all("host").iter().count() <= 1);
    }
    let _ = parse_response(data, &limits);
});
