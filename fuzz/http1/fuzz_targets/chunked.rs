//! The chunked decoder (crates/floodgate-http1/src/chunked.rs): never a panic, never more
//! data out than bytes in, and the same outcome however the input is split (the first byte
//! picks the piece size).
#![no_main]

use floodgate_http1::chunked::{ChunkLimits, decode_in_pieces};
use libfuzzer_sys::fuzz_target;

/// Data, how many bytes it used once ended, and whether it was refused.
fn decode(input: &[u8], step: usize) -> (Vec<u8>, Option<usize>, bool) {
    let d = decode_in_pieces(input, step, ChunkLimits::default());
    (d.data, d.used, d.error.is_some())
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, rest)) = input.split_first() else {
        return;
    };
    let whole = decode(rest, rest.len());
    let split = decode(rest, usize::from(first % 17) + 1);
    assert!(whole.0.len() <= rest.len());
    // Refused or ended the same way; the data given out before a refusal may differ only
    // by how far it got.
    assert_eq!(whole.2, split.2, "refusal differs by split");
    if !whole.2 {
        assert_eq!(whole.1, split.1);
        if whole.1.is_some() {
            assert_eq!(whole.0, split.0);
        }
    }
});
