//! The format of the framing corpus in `tests/corpus/`: one labelled case per line, raw
//! bytes written with escapes. Read by the engine's tests, the gateway's black-box tests
//! and the fuzzers' seed corpus alike.

/// One labelled case.
#[derive(Debug, Clone)]
pub struct Case {
    /// What must happen to it (`severe`, `refuse`, `pass`…).
    pub label: String,
    /// Where it comes from and what it tries.
    pub name: String,
    /// The bytes sent.
    pub raw: Vec<u8>,
    /// The body the next hop must get, for cases that pass.
    pub body: Option<Vec<u8>>,
}

/// The cases of a corpus file's text (`#` lines are comments).
pub fn parse(text: &str) -> Vec<Case> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut cols = l.split('\t');
            Some(Case {
                label: cols.next()?.to_owned(),
                name: cols.next()?.to_owned(),
                raw: unescape(cols.next()?),
                body: cols.next().map(unescape),
            })
        })
        .collect()
}

/// `\r \n \t \\ \xNN` back to bytes (anything else is taken as written).
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'r')) => Some((b'\r', 2)),
            (b'\\', Some(b'n')) => Some((b'\n', 2)),
            (b'\\', Some(b't')) => Some((b'\t', 2)),
            (b'\\', Some(b'\\')) => Some((b'\\', 2)),
            (b'\\', Some(b'x')) => b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|v| (v, 4)),
            _ => None,
        };
        match escaped {
            Some((v, n)) => {
                out.push(v);
                i += n;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_round_trip() {
        assert_eq!(
            super::unescape(r"a\r\n\t\\\x00\xff\q"),
            b"a\r\n\t\\\x00\xff\\q"
        );
        let cases = super::parse("# c\npass\tn\tGET\\r\\n\tbody\nrefuse\tm\tX\n");
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].body.as_deref(), Some(&b"body"[..]));
        assert_eq!(cases[1].raw, b"X");
    }
}
