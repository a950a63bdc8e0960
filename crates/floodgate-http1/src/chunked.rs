//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder that takes bytes as
//! they arrive and never holds more than one chunk's control line or the trailer section,
//! and the encoder's framing pieces.
//!
//! Strict where parsers differ: a chunk size is hexadecimal digits only (no sign, no `0x`,
//! no white space unless a `;` extension follows), checked for overflow; every line ends
//! in CRLF, never a bare LF or CR; the CRLF after a chunk's data is required; extensions
//! and trailers are bounded.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;

/// Bounds on what a chunked body may carry besides its data.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// The longest chunk-size line, extensions included.
    pub max_line: usize,
    /// The largest trailer section, in bytes.
    pub max_trailers: usize,
    /// The most trailer fields.
    pub max_trailer_fields: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_line: 4096,
            max_trailers: 8192,
            max_trailer_fields: 32,
        }
    }
}

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is not hexadecimal digits.
    BadSize,
    /// A chunk size too large for 64 bits.
    SizeOverflow,
    /// A line not ended by CRLF, or a control character where none may be.
    BadLine,
    /// A chunk-size line longer than the limit.
    LineTooLong,
    /// The data of a chunk not followed by CRLF.
    MissingDataEnd,
    /// The trailer section is malformed or too large.
    BadTrailers,
}

impl ChunkError {
    /// A sentence for the log.
    pub fn reason(self) -> &'static str {
        match self {
            ChunkError::BadSize => "a chunk size is not hexadecimal",
            ChunkError::SizeOverflow => "a chunk size overflows",
            ChunkError::BadLine => "a chunk line is not ended by CRLF",
            ChunkError::LineTooLong => "a chunk-size line is too long",
            ChunkError::MissingDataEnd => "a chunk's data is not followed by CRLF",
            ChunkError::BadTrailers => "the trailer section is malformed or too large",
        }
    }
}

/// What the decoder produced from the bytes it had.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data.
    Data(Bytes),
    /// The body ended, with its trailer fields if it had any.
    End(Option<HeaderMap>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// White space after the size: only a `;` may follow.
    SizeSpace,
    /// Inside the extensions, until the line's CR.
    Extension,
    /// Saw the CR ending the size line.
    SizeLf,
    /// Reading this many more bytes of data.
    Data(u64),
    /// Expecting the CR after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// After the last chunk: the trailer section.
    Trailers,
    /// The body has ended.
    Done,
}

/// Decodes a chunked body incrementally.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The size of the chunk whose size line is being read.
    size: u64,
    /// Bytes of the current size line seen so far.
    line: usize,
    limits: ChunkLimits,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new(limits: ChunkLimits) -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            size: 0,
            line: 0,
            limits,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `buf`, consuming what it used: `Ok(None)` when it needs more
    /// bytes. Data is split off `buf` without copying.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ChunkError> {
        loop {
            match self.state {
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    return Ok(Some(Decoded::Data(data)));
                }
                State::Trailers => return self.trailers(buf),
                State::Done => return Ok(Some(Decoded::End(None))),
                _ => {}
            }
            let Some(&b) = buf.first() else {
                return Ok(None);
            };
            buf.advance(1);
            self.step(b)?;
        }
    }

    /// One byte of a control line (a size line or the CRLF after data).
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        if matches!(
            self.state,
            State::Size { .. } | State::SizeSpace | State::Extension | State::SizeLf
        ) {
            self.line += 1;
            if self.line > self.limits.max_line {
                return Err(ChunkError::LineTooLong);
            }
        }
        self.state = match self.state {
            State::Size { value, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = u64::from(match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        _ => b - b'A' + 10,
                    });
                    if value > (u64::MAX >> 4) {
                        return Err(ChunkError::SizeOverflow);
                    }
                    State::Size {
                        value: (value << 4) | digit,
                        digits: digits.saturating_add(1),
                    }
                }
                _ if digits == 0 => return Err(ChunkError::BadSize),
                b'\r' => {
                    self.size = value;
                    State::SizeLf
                }
                b';' => {
                    self.size = value;
                    State::Extension
                }
                b' ' | b'\t' => {
                    self.size = value;
                    State::SizeSpace
                }
                b'\n' => return Err(ChunkError::BadLine),
                _ => return Err(ChunkError::BadSize),
            },
            State::SizeSpace => match b {
                b' ' | b'\t' => State::SizeSpace,
                b';' => State::Extension,
                _ => return Err(ChunkError::BadSize),
            },
            State::Extension => match b {
                b'\r' => State::SizeLf,
                // Control characters (bare LF among them) have no place in an extension.
                b'\t' => State::Extension,
                0..=0x1f | 0x7f => return Err(ChunkError::BadLine),
                _ => State::Extension,
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLine);
                }
                self.line = 0;
                if self.size == 0 {
                    State::Trailers
                } else {
                    State::Data(self.size)
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::MissingDataEnd);
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingDataEnd);
                }
                State::Size {
                    value: 0,
                    digits: 0,
                }
            }
            State::Data(_) | State::Trailers | State::Done => self.state,
        };
        Ok(())
    }

    /// The trailer section: an empty line, or fields up to an empty line.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ChunkError> {
        if buf.len() >= 2 && &buf[..2] == b"\r\n" {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Some(Decoded::End(None)));
        }
        if buf.first() == Some(&b'\n') || (buf.len() >= 2 && buf[0] == b'\r') {
            return Err(ChunkError::BadTrailers);
        }
        let Some(end) = find(buf, b"\r\n\r\n") else {
            if buf.len() > self.limits.max_trailers {
                return Err(ChunkError::BadTrailers);
            }
            return Ok(None);
        };
        let section = &buf[..end + 4];
        if section.len() > self.limits.max_trailers || crate::head::has_bare_lf(section) {
            return Err(ChunkError::BadTrailers);
        }
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.max_trailer_fields];
        let parsed = match httparse::parse_headers(section, &mut fields) {
            Ok(httparse::Status::Complete((_, parsed))) => parsed,
            _ => return Err(ChunkError::BadTrailers),
        };
        let mut map = HeaderMap::with_capacity(parsed.len());
        for f in parsed {
            let name = http::HeaderName::from_bytes(f.name.as_bytes())
                .map_err(|_| ChunkError::BadTrailers)?;
            let value =
                http::HeaderValue::from_bytes(f.value).map_err(|_| ChunkError::BadTrailers)?;
            map.append(name, value);
        }
        buf.advance(end + 4);
        self.state = State::Done;
        Ok(Some(Decoded::End(Some(map))))
    }
}

/// Where `needle` first occurs in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes the size line of a chunk of `len` bytes.
pub(crate) fn size_line(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// A whole decoding, for tests and fuzzers (the engine decodes as bytes arrive).
#[derive(Debug, Default)]
pub struct Decoding {
    /// The data decoded (up to the error, if any).
    pub data: Vec<u8>,
    /// The trailer fields.
    pub trailers: Option<HeaderMap>,
    /// How many bytes of the input the body took, once it ended.
    pub used: Option<usize>,
    /// Why it was refused.
    pub error: Option<ChunkError>,
}

/// Decodes `input` fed `step` bytes at a time.
pub fn decode_in_pieces(input: &[u8], step: usize, limits: ChunkLimits) -> Decoding {
    let mut d = ChunkedDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Decoding::default();
    let mut fed = 0;
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(Decoded::Data(b))) => out.data.extend_from_slice(&b),
                Ok(Some(Decoded::End(t))) => {
                    out.trailers = t;
                    out.used = Some(fed - buf.len());
                    return out;
                }
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data, the trailers and the bytes used of a whole body; an unfinished body is
    /// an error here.
    fn decode_all(
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, usize), ChunkError> {
        let d = decode_in_pieces(input, step, ChunkLimits::default());
        match (d.error, d.used) {
            (Some(e), _) => Err(e),
            (None, Some(used)) => Ok((d.data, d.trailers, used)),
            (None, None) => Err(ChunkError::BadLine),
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let input = b"5\r\nhello\r\n6;name=value\r\n world\r\nA\r\n0123456789\r\n0\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (data, trailers, used) = decode_all(input, step).unwrap();
            assert_eq!(data, b"hello world0123456789");
            assert!(trailers.is_none());
            assert_eq!(
                used,
                input.len() - 4,
                "the bytes after the body stay: {step}"
            );
        }
    }

    #[test]
    fn trailers_are_parsed_and_bounded() {
        let (data, trailers, _) =
            decode_all(b"1\r\na\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n", 64).unwrap();
        assert_eq!(data, b"a");
        let t = trailers.unwrap();
        assert_eq!(t["x-sum"], "1");
        assert_eq!(t["y"], "2");
        let big = format!("0\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(
            decode_all(big.as_bytes(), 100).unwrap_err(),
            ChunkError::BadTrailers
        );
        assert_eq!(
            decode_all(b"0\r\nX: 1\nY: 2\r\n\r\n", 64).unwrap_err(),
            ChunkError::BadTrailers
        );
        assert_eq!(
            decode_all(b"0\r\nBad Name: 1\r\n\r\n", 64).unwrap_err(),
            ChunkError::BadTrailers
        );
    }

    #[test]
    fn refuses_what_parsers_disagree_on() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"-5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"\r\nhello\r\n0\r\n\r\n", ChunkError::BadSize),
            (b"5\nhello\r\n0\r\n\r\n", ChunkError::BadLine),
            (b"5\rhello\r\n0\r\n\r\n", ChunkError::BadLine),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", ChunkError::BadLine),
            (b"5;a\x00\r\nhello\r\n0\r\n\r\n", ChunkError::BadLine),
            (b"5\r\nhelloX\r\n0\r\n\r\n", ChunkError::MissingDataEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingDataEnd),
            (b"5\r\nhello\r0\r\n\r\n", ChunkError::MissingDataEnd),
            (
                b"10000000000000000\r\nhello\r\n0\r\n\r\n",
                ChunkError::SizeOverflow,
            ),
            (b"0\r\n\n", ChunkError::BadTrailers),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode_all(input, 64).unwrap_err(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Sizes up to the limit of 64 bits parse; leading zeros are allowed by the grammar.
        let mut d = ChunkedDecoder::new(ChunkLimits::default());
        let mut b = BytesMut::from(&b"ffffffffffffffff\r\nx"[..]);
        assert!(matches!(d.decode(&mut b), Ok(Some(Decoded::Data(_)))));
        assert_eq!(
            decode_all(b"0005\r\nhello\r\n0\r\n\r\n", 3).unwrap().0,
            b"hello"
        );
    }

    #[test]
    fn extensions_are_bounded() {
        let long = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(5000));
        assert_eq!(
            decode_all(long.as_bytes(), 512).unwrap_err(),
            ChunkError::LineTooLong
        );
        let ok = format!("5 ;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(1000));
        assert_eq!(decode_all(ok.as_bytes(), 512).unwrap().0, b"hello");
    }

    #[test]
    fn size_lines_are_lowercase_hex() {
        for (n, want) in [(0, "0\r\n"), (10, "a\r\n"), (4096, "1000\r\n")] {
            let mut out = Vec::new();
            size_line(&mut out, n);
            assert_eq!(out, want.as_bytes());
        }
    }
}
