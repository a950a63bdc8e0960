//! Configuration errors: each one names where it is (file, line, column, field path) and what
//! was expected, and a load reports all of them together.

use std::fmt;

/// A line and column in the source text, both 1-based (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key (`routes`, `match`, or an upstream's name).
    Key(String),
    /// A list index.
    Index(usize),
}

/// Where a value sits in the document, displayed as `routes[2].match.path`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }
    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Key(key.to_owned()));
        FieldPath(v)
    }
    /// This path extended by a list index.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Index(i));
        FieldPath(v)
    }
    /// The steps of the path.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
    /// Parses the display form back (`routes[2].match.path`), for tests and lookups.
    pub fn parse(s: &str) -> Self {
        let mut out = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
            if !name.is_empty() {
                out.push(Segment::Key(name.to_owned()));
            }
            while let Some((idx, tail)) = rest.split_once(']') {
                if let Ok(i) = idx.parse() {
                    out.push(Segment::Index(i));
                }
                rest = tail.strip_prefix('[').unwrap_or(tail);
            }
        }
        FieldPath(out)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One mistake in a configuration document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file it is in (or a name such as `<demo>`); set when the load finishes.
    pub file: String,
    /// Where in the file.
    pub pos: Position,
    /// Which field.
    pub path: FieldPath,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`/`pos`; the file name is filled in by the loader.
    pub fn new(path: FieldPath, pos: Position, message: impl Into<String>) -> Self {
        ConfigError {
            file: String::new(),
            pos,
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    /// `file:line:column: field: message`; without a place in the file (it could not be
    /// read) `file: message`, and without a field (YAML syntax) `file:line:column: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.column)?;
        if self.path.segments().is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in one load, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_round_trip() {
        for s in [
            "routes[2].match.path",
            "upstreams.catalog.targets[0]",
            "listeners",
        ] {
            assert_eq!(FieldPath::parse(s).to_string(), s);
        }
    }
}
