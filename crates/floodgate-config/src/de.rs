//! A serde `Deserializer` over [`Node`]s that records errors instead of stopping at the first.
//!
//! serde's derived visitors abort on the first error, which would show a user one mistake per
//! run. This deserializer (a) drops unknown fields after recording them, so decoding goes on,
//! (b) stamps every error with the path and position of the innermost node where it arose, and
//! (c) is driven entry by entry by [`decode`]'s callers (each listener, route and upstream
//! separately), so a broken route does not hide errors in the next one. Hand-written because
//! no YAML crate offers recoverable, located decoding.

use std::cell::RefCell;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use crate::error::{ConfigError, FieldPath};
use crate::node::{Node, Value};

/// Where decoding errors accumulate.
pub type Sink = RefCell<Vec<ConfigError>>;

/// Decodes `node` as `T`; errors go to `sink`. `None` when the node could not be decoded at
/// all; `Some` may still come with recorded errors (unknown fields), which fail the load.
pub fn decode<T: DeserializeOwned>(node: &Node, path: FieldPath, sink: &Sink) -> Option<T> {
    T::deserialize(NodeDe { node, path, sink }).ok()
}

/// Error passed up through serde; its text is recorded once, by the innermost node.
#[derive(Debug)]
pub struct DeError {
    message: String,
    recorded: bool,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for DeError {}
impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            recorded: false,
        }
    }
}

/// Numbers may come as strings: `${VAR}` interpolation always yields a string scalar, so
/// `workers: ${WORKERS:-2}` must still read as a number.
macro_rules! numbers_from_strings {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match &self.node.value {
                Value::Str(s) => {
                    let t = s.trim();
                    let r = if let Ok(i) = t.parse::<i64>() {
                        visitor.visit_i64(i)
                    } else if let Ok(f) = t.parse::<f64>() {
                        visitor.visit_f64(f)
                    } else {
                        visitor.visit_str(s)
                    };
                    r.map_err(|e| self.record(e))
                }
                _ => self.deserialize_any(visitor),
            }
        }
    )*};
}

struct NodeDe<'a> {
    node: &'a Node,
    path: FieldPath,
    sink: &'a Sink,
}

impl<'a> NodeDe<'a> {
    fn record(&self, mut e: DeError) -> DeError {
        if !e.recorded {
            self.sink.borrow_mut().push(ConfigError::new(
                self.path.clone(),
                self.node.pos,
                &e.message,
            ));
            e.recorded = true;
        }
        e
    }
    fn fail(&self, message: String) -> DeError {
        self.record(DeError {
            message,
            recorded: false,
        })
    }
    fn child(&self, node: &'a Node, path: FieldPath) -> NodeDe<'a> {
        NodeDe {
            node,
            path,
            sink: self.sink,
        }
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                de: &self,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe::new(entries, &self, None)),
        };
        r.map_err(|e| self.record(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(NodeDe {
                node: self.node,
                path: self.path.clone(),
                sink: self.sink,
            }),
        };
        r.map_err(|e| self.record(e))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match scalar_text(&self.node.value) {
            Some(s) => visitor.visit_str(&s).map_err(|e| self.record(e)),
            None => Err(self.fail(format!(
                "expected a string, found {}",
                self.node.value.kind()
            ))),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => visitor
                .visit_seq(SeqDe {
                    items: items.iter().enumerate(),
                    de: &self,
                })
                .map_err(|e| self.record(e)),
            other => Err(self.fail(format!("expected a list, found {}", other.kind()))),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => visitor
                .visit_map(MapDe::new(entries, &self, None))
                .map_err(|e| self.record(e)),
            other => Err(self.fail(expected_mapping(other))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => {
                // Report every unknown key now, before a type error in a known one can
                // end the visit early.
                for (k, _) in entries {
                    let name = k.key_str().unwrap_or_default();
                    if !fields.is_empty() && !fields.contains(&name) {
                        self.sink.borrow_mut().push(ConfigError::new(
                            self.path.key(name),
                            k.pos,
                            crate::suggest::unknown("field", name, fields),
                        ));
                    }
                }
                visitor
                    .visit_map(MapDe::new(entries, &self, Some(fields)))
                    .map_err(|e| self.record(e))
            }
            other => Err(self.fail(expected_mapping(other))),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let name = k.key_str().unwrap_or_default();
                let path = self.path.key(name);
                visitor.visit_enum(EnumDe {
                    key: k,
                    value: self.child(v, path),
                })
            }
            other => {
                return Err(self.fail(format!(
                    "expected one of {}, found {}",
                    one_of(variants),
                    other.kind()
                )));
            }
        };
        r.map_err(|e| self.record(e))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        visitor.visit_newtype_struct(NodeDe {
            node: self.node,
            path,
            sink: self.sink,
        })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) if s == "true" || s == "false" => {
                visitor.visit_bool(s == "true").map_err(|e| self.record(e))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct tuple tuple_struct
    }

    numbers_from_strings! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }
}

/// "expected a mapping", saying what was there; an empty value is most often fields
/// indented too little to belong to it.
fn expected_mapping(found: &Value) -> String {
    match found {
        Value::Null => "expected a mapping, found nothing (are the lines after it indented \
                        under it?)"
            .to_owned(),
        other => format!("expected a mapping, found {}", other.kind()),
    }
}

fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct SeqDe<'a, 'b> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    de: &'b NodeDe<'a>,
}

impl<'de, 'a, 'b> SeqAccess<'de> for SeqDe<'a, 'b> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => seed
                .deserialize(self.de.child(node, self.de.path.index(i)))
                .map(Some),
            None => Ok(None),
        }
    }
}

struct MapDe<'a, 'b> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    key: &'a str,
    de: &'b NodeDe<'a>,
    fields: Option<&'static [&'static str]>,
}

impl<'a, 'b> MapDe<'a, 'b> {
    fn new(
        entries: &'a [(Node, Node)],
        de: &'b NodeDe<'a>,
        fields: Option<&'static [&'static str]>,
    ) -> Self {
        MapDe {
            entries: entries.iter(),
            value: None,
            key: "",
            de,
            fields,
        }
    }
}

impl<'de, 'a, 'b> MapAccess<'de> for MapDe<'a, 'b> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (k, v) in self.entries.by_ref() {
            let name = k.key_str().unwrap_or_default();
            if let Some(fields) = self.fields
                && !fields.is_empty()
                && !fields.contains(&name)
            {
                // Already reported by `deserialize_struct`.
                continue;
            }
            self.value = Some(v);
            self.key = name;
            return seed
                .deserialize(self.de.child(k, self.de.path.key(name)))
                .map(Some);
        }
        Ok(None)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value without a key"))?;
        seed.deserialize(self.de.child(node, self.de.path.key(self.key)))
    }
}

struct EnumDe<'a> {
    key: &'a Node,
    value: NodeDe<'a>,
}

impl<'de, 'a> EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, NodeDe<'a>), DeError> {
        let key = NodeDe {
            node: self.key,
            path: self.value.path.clone(),
            sink: self.value.sink,
        };
        let v = seed.deserialize(key)?;
        Ok((v, self.value))
    }
}

impl<'de, 'a> VariantAccess<'de> for NodeDe<'a> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        match self.node.value {
            Value::Null => Ok(()),
            _ => Err(self.fail("this option takes no value".into())),
        }
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
    }

    fn run<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<String>) {
        let node = Node::parse(text).expect("yaml");
        let sink = Sink::default();
        let out = decode::<T>(&node, FieldPath::root(), &sink);
        let errs = sink
            .into_inner()
            .into_iter()
            .map(|e| format!("{}:{} {}: {}", e.pos.line, e.pos.column, e.path, e.message))
            .collect();
        (out, errs)
    }

    #[test]
    fn unknown_fields_are_all_reported_and_skipped() {
        let (out, errs) = run::<Outer>("items:\n  - port: 1\n    bogus: 2\n    other: 3\n");
        assert_eq!(
            out,
            Some(Outer {
                items: vec![Inner {
                    port: 1,
                    name: None
                }]
            })
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with(
            "3:5 items[0].bogus: unknown field `bogus`, expected one of `port`, `name`"
        ));
        assert!(errs[1].starts_with("4:5 items[0].other"));
    }

    #[test]
    fn numbers_may_be_written_as_strings() {
        let (out, errs) = run::<Outer>("items:\n  - port: \"8080\"\n");
        assert_eq!(
            out,
            Some(Outer {
                items: vec![Inner {
                    port: 8080,
                    name: None
                }]
            }),
            "{errs:?}"
        );
        let (_, errs) = run::<Outer>("items:\n  - port: \"eighty\"\n");
        assert_eq!(
            errs,
            vec!["2:11 items[0].port: invalid type: string \"eighty\", expected u16".to_string()]
        );
    }

    #[test]
    fn type_errors_name_the_innermost_field() {
        let (out, errs) = run::<Outer>("items:\n  - port: 70000\n");
        assert_eq!(out, None);
        assert_eq!(
            errs,
            vec!["2:11 items[0].port: invalid value: integer `70000`, expected u16".to_string()]
        );
        let (_, errs) = run::<Outer>("items:\n  - name: x\n");
        assert_eq!(errs, vec!["2:5 items[0]: missing field `port`".to_string()]);
    }
}
