//! The framing corpus (tests/corpus/) against the engine's parsers: every case gets the
//! verdict its label asks for. The gateway-level run of the same corpus, with an origin
//! that logs what it receives, is `crates/floodgate/tests/it/desync.rs`.

#![allow(clippy::unwrap_used)]

use floodgate_http1::Framing;
use floodgate_http1::chunked::{ChunkLimits, decode_in_pieces};
use floodgate_http1::corpus::Case;
use floodgate_http1::head::{HeadLimits, parse_request};

/// Reads a corpus file.
fn load(file: &str) -> Vec<Case> {
    let path = format!("{}/tests/corpus/{file}", env!("CARGO_MANIFEST_DIR"));
    floodgate_http1::corpus::parse(&std::fs::read_to_string(path).unwrap())
}

/// Guardian cases labelled compliant that the engine refuses on purpose, and why.
const STRICTER: &[(&str, &str)] = &[
    ("more-compliant-tests/Correct TE OK", UNDECODED),
    (
        "more-compliant-tests/Transfer-Encoding: identity and chunked OK",
        UNDECODED,
    ),
    (
        "more-compliant-tests/Multiple transfer encoding headers in a single request OK",
        UNDECODED,
    ),
    (
        "rfc-compliant/Different Transfer-Encoding headers",
        UNDECODED,
    ),
    (
        "rfc-compliant/Different Transfer-Encoding headers combined",
        UNDECODED,
    ),
    (
        "more-compliant-tests/TE with custom parameters OK",
        PARAMETERS,
    ),
    (
        "rfc-compliant/Transfer-Encoding with a param: chunked;custom_param",
        PARAMETERS,
    ),
    (
        "rfc-compliant/Empty URI",
        "RFC 9112 §3.2: a request target is required; `GET  HTTP/1.1` has none",
    ),
];

/// Why codings other than chunked are refused.
const UNDECODED: &str = "RFC 9112 §6.1: codings the gateway does not decode (gzip, deflate, identity) are 501, as nginx does; a next hop that decodes them differently could not desynchronise";

/// Why parameters on chunked are refused.
const PARAMETERS: &str =
    "chunked defines no parameters; nginx answers 501 to any coding that is not exactly chunked";

fn limits() -> HeadLimits {
    HeadLimits {
        max_bytes: 64 * 1024,
        max_fields: 100,
    }
}

/// The body after a head, decoded by `framing`: the data, or `None` if it is refused.
fn body(framing: Framing, rest: &[u8]) -> Option<Vec<u8>> {
    match framing {
        Framing::Empty => Some(Vec::new()),
        Framing::Length(n) => Some(rest[..usize::try_from(n).unwrap().min(rest.len())].to_vec()),
        Framing::Chunked => {
            let d = decode_in_pieces(rest, rest.len(), ChunkLimits::default());
            d.used.map(|_| d.data)
        }
        Framing::UntilClose => None,
    }
}

#[test]
fn desync_guardian_cases_get_their_verdicts() {
    let cases = load("desync-guardian.txt");
    assert_eq!(cases.len(), 159);
    let mut tally = std::collections::BTreeMap::<(String, &str), usize>::new();
    for c in &cases {
        let parsed = parse_request(&c.raw, &limits());
        let verdict = match &parsed {
            Ok(Some(_)) => "passed",
            Ok(None) => panic!("{}: a whole head is incomplete", c.name),
            Err(_) => "refused",
        };
        *tally.entry((c.label.clone(), verdict)).or_default() += 1;
        match c.label.as_str() {
            "severe" | "ambiguous" if verdict == "passed" => {
                // Passed only when the framing the engine decides is the only reading: no
                // field that another parser could take for a framing field.
                let (head, _) = parsed.unwrap().unwrap();
                for (name, _) in &head.headers {
                    let n = name.as_str();
                    let letters: String = n.chars().filter(char::is_ascii_alphabetic).collect();
                    let framing_like = letters == "contentlength" || letters == "transferencoding";
                    assert!(
                        !framing_like || n == "content-length" || n == "transfer-encoding",
                        "{}: {n} passes and could be read as a framing field",
                        c.name
                    );
                }
                assert!(c.label != "severe", "{}: a severe case passed", c.name);
            }
            "compliant" if verdict == "refused" => {
                assert!(
                    STRICTER.iter().any(|(name, _)| c.name == *name),
                    "{}: a compliant case was refused: {parsed:?}",
                    c.name
                );
            }
            _ => {}
        }
    }
    eprintln!("desync-guardian corpus: {tally:?}");
}

#[test]
fn smuggling_payloads_get_their_verdicts() {
    let cases = load("smuggling.txt");
    assert!(cases.len() >= 50);
    for c in &cases {
        let parsed = parse_request(&c.raw, &limits());
        match c.label.as_str() {
            "refuse" => assert!(parsed.is_err(), "{}: {parsed:?}", c.name),
            "bad-body" | "pass" => {
                let (head, len) = parsed
                    .unwrap_or_else(|e| panic!("{}: {e:?}", c.name))
                    .unwrap();
                let got = body(head.framing, &c.raw[len..]);
                if c.label == "bad-body" {
                    assert_eq!(got, None, "{}", c.name);
                } else {
                    assert_eq!(got.as_deref(), c.body.as_deref(), "{}", c.name);
                }
            }
            other => panic!("unknown label {other}"),
        }
    }
}

#[test]
fn responses_with_the_same_fields_get_the_same_verdict() {
    // Both sides hold fields to the same rules: the corpus's fields under a request line
    // and under a status line are refused or accepted alike (the request-only rules, one
    // Host and the request line itself, aside).
    let mut compared = 0;
    for file in ["desync-guardian.txt", "smuggling.txt"] {
        for c in load(file) {
            let Some(at) = c.raw.windows(2).position(|w| w == b"\r\n") else {
                continue;
            };
            let fields = &c.raw[at..];
            let head_end = fields
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(fields.len(), |i| i + 4);
            let fields = &fields[..head_end];
            let text = String::from_utf8_lossy(fields).to_ascii_lowercase();
            if text.matches("\r\nhost:").count() > 1 {
                continue;
            }
            let request = [&b"POST / HTTP/1.1"[..], fields].concat();
            let response = [&b"HTTP/1.1 200 OK"[..], fields].concat();
            let as_request = parse_request(&request, &limits()).map(|h| h.map(|(h, _)| h.framing));
            let as_response = floodgate_http1::head::parse_response(&response, &limits())
                .map_err(|_| ())
                .and_then(|h| {
                    let (h, _) = h.ok_or(())?;
                    floodgate_http1::framing::response(&h.headers, 200, false, false)
                        .map_err(|_| ())
                });
            // The one difference RFC 9112 §6.3 makes: a response whose codings do not
            // include chunked is read until close; a request is refused.
            let read_to_close = as_response == Ok(floodgate_http1::Framing::UntilClose)
                && text.contains("\r\ntransfer-encoding:");
            if read_to_close {
                assert!(as_request.is_err(), "{}", c.name);
                continue;
            }
            assert_eq!(
                as_request.is_ok(),
                as_response.is_ok(),
                "{}: request {as_request:?}, response {as_response:?}",
                c.name
            );
            compared += 1;
        }
    }
    assert!(compared > 150, "{compared}");
}
