//! Floodgate's configuration: the YAML model, its loading with precise errors, validation and
//! JSON Schema export.
//!
//! Loading goes text → [`node::Node`] tree (YAML syntax, `${VAR}` interpolation) → typed
//! [`model::Config`] through [`de`], entry by entry → [`validate`] rules → [`ValidConfig`].
//! Every error carries file, line, column and field path, and a load reports all it finds.
//!
//! Layout: `node` (spanned tree), `de` (recoverable deserializer), `model` (the file's shape),
//! `value` (durations, sizes, rates, percentages), `template` (path and text templates),
//! `validate` (cross-field rules), `error` (located errors).

pub mod de;
pub mod error;
pub mod model;
pub mod node;
pub mod template;
mod validate;
pub mod value;

use std::ops::Deref;
use std::path::Path;

pub use error::{ConfigError, ConfigErrors, FieldPath};
pub use model::Config;
pub use validate::route_name;

use de::Sink;
use node::{Node, Value};

/// A configuration that passed every check. Only [`load_str`] and [`load_file`] make one.
#[derive(Debug, Clone)]
pub struct ValidConfig(Config);

impl Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

/// Reads and checks a configuration file; `env` answers `${VAR}` references.
pub fn load_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ValidConfig, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&name, &text, env),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            pos: node::Position::default(),
            path: FieldPath::root(),
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// Parses and checks configuration text; `name` labels errors (usually the file path).
pub fn load_str(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ValidConfig, ConfigErrors> {
    let finish = |mut errors: Vec<ConfigError>| {
        for e in &mut errors {
            e.file = name.to_owned();
        }
        errors.sort_by_key(|e| (e.pos.line, e.pos.column));
        errors.dedup();
        ConfigErrors(errors)
    };
    let mut root = Node::parse(text).map_err(|e| finish(vec![e]))?;
    let mut errors = Vec::new();
    root.interpolate(env, &FieldPath::root(), &mut errors);
    let sink = Sink::default();
    decode_entries(&root, &sink);
    let config = if sink.borrow().is_empty() {
        de::decode::<Config>(&root, FieldPath::root(), &sink)
    } else {
        None
    };
    errors.extend(sink.into_inner());
    let Some(config) = config.filter(|_| errors.is_empty()) else {
        return Err(finish(errors));
    };
    for (path, message) in validate::validate(&config) {
        errors.push(ConfigError::new(path.clone(), root.locate(&path), message));
    }
    if errors.is_empty() {
        Ok(ValidConfig(config))
    } else {
        Err(finish(errors))
    }
}

/// Decodes each list entry and map value of the top-level sections on its own, so that an
/// error in one entry does not hide errors in the others.
fn decode_entries(root: &Node, sink: &Sink) {
    let Value::Map(sections) = &root.value else {
        sink.borrow_mut().push(ConfigError::new(
            FieldPath::root(),
            root.pos,
            format!(
                "expected a mapping of sections (listeners, upstreams, routes, ...), found {}",
                root.value.kind()
            ),
        ));
        return;
    };
    let root_path = FieldPath::root();
    for (key, value) in sections {
        let name = key.key_str().unwrap_or_default();
        let path = root_path.key(name);
        match (name, &value.value) {
            ("listeners", Value::Seq(items)) => {
                each(items, &path, sink, de::decode::<model::Listener>)
            }
            ("routes", Value::Seq(items)) => each(items, &path, sink, de::decode::<model::Route>),
            ("upstreams", Value::Map(entries)) => {
                for (k, v) in entries {
                    de::decode::<model::Upstream>(
                        v,
                        path.key(k.key_str().unwrap_or_default()),
                        sink,
                    );
                }
            }
            _ => {}
        }
    }
}

fn each<T>(
    items: &[Node],
    path: &FieldPath,
    sink: &Sink,
    f: fn(&Node, FieldPath, &Sink) -> Option<T>,
) {
    for (i, item) in items.iter().enumerate() {
        f(item, path.index(i), sink);
    }
}

/// The JSON Schema of the configuration file (draft 2020-12).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Config);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
