//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde-saphyr parses the text; we keep the result as [`Node`]s (value, line, column) rather
//! than going straight to the typed model, for two reasons: every later error (unknown field,
//! bad duration, reference to a missing upstream) can then name its exact location, and the
//! typed decoding can run entry by entry (see [`crate::de`]) so that one mistake does not hide
//! the next. `${VAR}` interpolation also happens here, on string scalars, before decoding.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

pub use crate::error::Position;
use crate::error::{ConfigError, FieldPath};

/// One YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value starts.
    pub pos: Position,
}

/// The value of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Any string scalar.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order; keys are scalars rendered as strings.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What kind of YAML value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A YAML parser's message in plain words: what is wrong and what to do, without the
/// parser's vocabulary or its own copy of the position (the error carries it).
fn plain_syntax_error(parser: &str) -> String {
    let text = match parser.rfind(" at line ") {
        Some(at) => &parser[..at],
        None => parser,
    };
    if text.contains("did not find expected '-' indicator") {
        "YAML syntax: this line is indented differently from the list items around it \
         (a list item starts with `- ` at the list's indentation)"
            .to_owned()
    } else if text.contains("while parsing a block mapping, did not find expected key") {
        "YAML syntax: this line is indented differently from the keys around it, or a key \
         lacks its `:`"
            .to_owned()
    } else if let Some(key) = text
        .strip_prefix("duplicate mapping key: ")
        .map(|k| k.split(',').next().unwrap_or(k))
    {
        format!("YAML syntax: `{key}` appears twice in the same mapping; give each key once")
    } else if text.contains("did not find expected ',' or '}'") {
        "YAML syntax: a `{ ... }` mapping is not closed: a `,` or `}` is missing before here"
            .to_owned()
    } else if text.contains("did not find expected ',' or ']'")
        || text.contains("unclosed bracket '['")
    {
        "YAML syntax: a `[ ... ]` list is not closed: a `,` or `]` is missing before here"
            .to_owned()
    } else if text.contains("unclosed quote") || text.contains("found unexpected end of stream") {
        "YAML syntax: a quoted string is not closed".to_owned()
    } else if text.contains("mapping values are not allowed") {
        "YAML syntax: a `:` where a value was expected (quote a value that contains `: `)"
            .to_owned()
    } else if text.contains("tab") && text.contains("indent") {
        "YAML syntax: tabs cannot indent YAML; use spaces".to_owned()
    } else if text.contains("is only valid inside a block") {
        "YAML syntax: a `- ` item inside `[ ... ]` or `{ ... }`: write a list either as \
         `[a, b]` or as `- ` lines"
            .to_owned()
    } else if text.contains("unclosed bracket '{'") {
        "YAML syntax: a `{ ... }` mapping is not closed".to_owned()
    } else if let Some(c) = text
        .strip_prefix("unexpected character: `")
        .and_then(|rest| rest.chars().next())
    {
        format!("YAML syntax: a value cannot start with `{c}` (quote the value)")
    } else if text.contains("cannot start any token") {
        "YAML syntax: a value cannot start with this character (quote the value)".to_owned()
    } else {
        format!("YAML syntax: {text}")
    }
}

impl Node {
    /// Parses YAML text into a tree; a syntax error carries its position.
    pub fn parse(text: &str) -> Result<Node, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Node {
                value: Value::Map(Vec::new()),
                pos: Position { line: 1, column: 1 },
            });
        }
        serde_saphyr::from_str::<Node>(text).map_err(|e| {
            let pos = e
                .location()
                .map(|l| Position {
                    line: l.line(),
                    column: l.column(),
                })
                .unwrap_or_default();
            let message = e.without_snippet().to_string();
            let message = message.lines().next().unwrap_or("invalid YAML");
            ConfigError::new(FieldPath::root(), pos, plain_syntax_error(message))
        })
    }

    /// The string keys of a mapping node, if it is one.
    pub fn key_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Finds the node at `path` (field names and list indexes), for locating errors found
    /// after decoding. Returns the deepest node that exists along the path.
    pub fn locate(&self, path: &FieldPath) -> Position {
        let mut node = self;
        for seg in path.segments() {
            let next = match (&node.value, seg) {
                (Value::Map(entries), crate::error::Segment::Key(k)) => entries
                    .iter()
                    .find(|(key, _)| key.key_str() == Some(k.as_str()))
                    .map(|(_, v)| v),
                (Value::Seq(items), crate::error::Segment::Index(i)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }

    /// Replaces `${NAME}` and `${NAME:-default}` in every string scalar using `lookup`;
    /// `$${` stands for a literal `${`. Each unresolvable reference becomes an error.
    pub fn interpolate(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
        path: &FieldPath,
        errors: &mut Vec<ConfigError>,
    ) {
        match &mut self.value {
            Value::Str(s) if s.contains('$') => match interpolate_str(s, lookup) {
                Ok(out) => *s = out,
                Err(msg) => errors.push(ConfigError::new(path.clone(), self.pos, msg)),
            },
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    item.interpolate(lookup, &path.index(i), errors);
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    let child = path.key(k.key_str().unwrap_or("?"));
                    v.interpolate(lookup, &child, errors);
                }
            }
            _ => {}
        }
    }
}

fn interpolate_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("invalid variable name {name:?} in `${{{expr}}}`"));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write `${{{name}:-default}}` to give a default)"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            value: spanned.value,
            pos: Position {
                line: spanned.referenced.line(),
                column: spanned.referenced.column(),
            },
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let key = match key.value {
                Value::Str(_) => key,
                Value::Int(i) => Node {
                    value: Value::Str(i.to_string()),
                    pos: key.pos,
                },
                Value::Bool(b) => Node {
                    value: Value::Str(b.to_string()),
                    pos: key.pos,
                },
                other => {
                    return Err(de::Error::custom(format!(
                        "mapping keys must be scalars, found {}",
                        other.kind()
                    )));
                }
            };
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "8080".to_string())
    }

    #[test]
    fn positions_are_one_based() {
        let n = Node::parse("a:\n  b: [1, x]\n").expect("parses");
        let Value::Map(m) = &n.value else {
            panic!("map")
        };
        let Value::Map(inner) = &m[0].1.value else {
            panic!("inner map")
        };
        let Value::Seq(items) = &inner[0].1.value else {
            panic!("seq")
        };
        assert_eq!(
            items[1].pos,
            Position {
                line: 2,
                column: 10
            }
        );
        assert_eq!(items[1].value, Value::Str("x".into()));
    }

    #[test]
    fn interpolation() {
        assert_eq!(
            interpolate_str("127.0.0.1:${PORT}", &env).as_deref(),
            Ok("127.0.0.1:8080")
        );
        assert_eq!(interpolate_str("${NOPE:-9}", &env).as_deref(), Ok("9"));
        assert_eq!(
            interpolate_str("$${PORT} $5", &env).as_deref(),
            Ok("${PORT} $5")
        );
        assert!(
            interpolate_str("${NOPE}", &env)
                .unwrap_err()
                .contains("NOPE is not set")
        );
        assert!(
            interpolate_str("${PORT", &env)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            interpolate_str("${1X}", &env)
                .unwrap_err()
                .contains("invalid variable")
        );
    }
}
