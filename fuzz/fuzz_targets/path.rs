//! Request paths made canonical (crates/floodgate-proxy/src/path.rs): never a panic, and
//! every answer canonical (no dot segment, no escape of an unreserved character, upper-case
//! hex) and unchanged by a second pass.
#![no_main]

use floodgate_config::model::{EscapedSlashes, PathHandling};
use floodgate_proxy::path::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let how = PathHandling {
        merge_slashes: options & 1 == 1,
        escaped_slashes: match options >> 1 & 3 {
            0 => EscapedSlashes::Keep,
            1 => EscapedSlashes::Decode,
            _ => EscapedSlashes::Reject,
        },
    };
    let path = format!("/{text}");
    if let Ok(once) = normalize(&path, &how) {
        assert!(once.starts_with('/'));
        assert!(once.split('/').all(|s| s != "." && s != ".."), "{once:?}");
        let twice = normalize(&once, &how).expect("a canonical path is accepted");
        assert_eq!(once, twice);
    }
});
