//! Floodgate's configuration: the YAML model, its loading with precise errors, validation and
//! JSON Schema export.
//!
//! Loading goes text → [`node::Node`] tree (YAML syntax, `${VAR}` interpolation) → typed
//! [`model::Config`] through [`de`], entry by entry → [`validate`] rules → [`ValidConfig`].
//! Every error carries file, line, column and field path, and a load reports all it finds.
//!
//! Layout: `node` (spanned tree), `de` (recoverable deserializer), `model` (the file's shape;
//! each policy's types in a file of its own: `ratelimit`, `admission`, `targets`, `cache`,
//! `auth`, `cors`, `waf`, `resilience`, `tls`),
//! `value` (durations, sizes, rates, percentages), `template` (path and text templates),
//! `validate` (cross-field rules), `error` (located errors).

pub mod admission;
pub mod auth;
pub mod cache;
pub mod cors;
pub mod de;
pub mod diff;
pub mod error;
pub mod model;
pub mod node;
pub mod ratelimit;
pub mod resilience;
mod suggest;
pub mod targets;
pub mod template;
pub mod tls;
mod validate;
pub mod value;
pub mod waf;
pub mod websocket;

use std::ops::Deref;
use std::path::Path;

pub use error::{ConfigError, ConfigErrors, FieldPath};
pub use model::Config;
pub use validate::limit_name;
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

/// Checks beyond this crate's, run on a config that passed all of them: what only the
/// runtime can judge (a URL its client library parses, key and certificate files it
/// reads). Each problem names the field at fault, so it is reported with its place in the
/// file like any other.
pub type Check<'a> = &'a dyn Fn(&Config) -> Vec<(FieldPath, String)>;

/// Reads and checks a configuration file; `env` answers `${VAR}` references.
pub fn load_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ValidConfig, ConfigErrors> {
    load_file_with(path, env, &|_| Vec::new())
}

/// [`load_file`], then `check`.
pub fn load_file_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    check: Check<'_>,
) -> Result<ValidConfig, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str_with(&name, &text, env, check),
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
    load_str_with(name, text, env, &|_| Vec::new())
}

/// [`load_str`], then `check`.
pub fn load_str_with(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    check: Check<'_>,
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
    let (config, assembled) = assemble(&root, &sink);
    errors.extend(sink.into_inner());
    // Cross-field rules run on whatever decoded, so their errors show up together with
    // the decoding errors; paths are mapped back to the entries' places in the file.
    let unresolved: Vec<FieldPath> = errors.iter().map(|e| e.path.clone()).collect();
    for (path, message) in validate::validate(&config) {
        if let Some(path) = assembled.original_path(&path)
            && !unresolved.contains(&path)
        {
            errors.push(ConfigError::new(path.clone(), root.locate(&path), message));
        }
    }
    if errors.is_empty() {
        // The runtime's checks assume a config that passed everything else.
        for (path, message) in check(&config) {
            let path = assembled.original_path(&path).unwrap_or(path);
            errors.push(ConfigError::new(path.clone(), root.locate(&path), message));
        }
    }
    if errors.is_empty() {
        Ok(ValidConfig(config))
    } else {
        Err(finish(errors))
    }
}

/// How the assembled config relates to the document: entries that failed to decode are
/// left out of lists (so indexes shift) and stand in as placeholders among upstreams (so
/// routes naming them do not report a second, misleading error).
#[derive(Default)]
struct Assembled {
    listeners_in_document: usize,
    listeners: Vec<usize>,
    routes: Vec<usize>,
    broken_upstreams: Vec<String>,
}

impl Assembled {
    fn original_path(&self, path: &FieldPath) -> Option<FieldPath> {
        use error::Segment;
        let segs = path.segments();
        let mut out = FieldPath::root();
        let mut rest = segs.iter();
        match (rest.next(), rest.next()) {
            (Some(Segment::Key(k)), Some(Segment::Index(i)))
                if k == "listeners" || k == "routes" =>
            {
                let map = if k == "listeners" {
                    &self.listeners
                } else {
                    &self.routes
                };
                out = out.key(k).index(*map.get(*i)?);
            }
            (Some(Segment::Key(k)), Some(Segment::Key(u)))
                if k == "upstreams" && self.broken_upstreams.contains(u) =>
            {
                return None;
            }
            (Some(Segment::Key(k)), None) if k == "listeners" && self.listeners_in_document > 0 => {
                return None;
            }
            _ => return Some(path.clone()),
        }
        for seg in rest {
            out = match seg {
                Segment::Key(k) => out.key(k),
                Segment::Index(i) => out.index(*i),
            };
        }
        Some(out)
    }
}

/// Decodes the document section by section and entry by entry, so that an error in one
/// entry does not hide errors in the others.
fn assemble(root: &Node, sink: &Sink) -> (Config, Assembled) {
    let mut cfg = Config {
        runtime: Default::default(),
        listeners: Vec::new(),
        admin: Default::default(),
        access_log: Default::default(),
        upstreams: Default::default(),
        routes: Vec::new(),
        cluster: None,
        dns: Default::default(),
        consumers: Vec::new(),
        oauth2: None,
        cache: Default::default(),
    };
    let mut asm = Assembled::default();
    let Value::Map(sections) = &root.value else {
        sink.borrow_mut().push(ConfigError::new(
            FieldPath::root(),
            root.pos,
            format!(
                "expected a mapping of sections (listeners, upstreams, routes, ...), found {}",
                root.value.kind()
            ),
        ));
        return (cfg, asm);
    };
    const SECTIONS: [&str; 11] = [
        "runtime",
        "listeners",
        "admin",
        "access_log",
        "upstreams",
        "routes",
        "cluster",
        "dns",
        "consumers",
        "oauth2",
        "cache",
    ];
    let top = FieldPath::root();
    for (key, value) in sections {
        let name = key.key_str().unwrap_or_default();
        let path = top.key(name);
        if value.value == Value::Null && SECTIONS.contains(&name) {
            continue;
        }
        match name {
            "runtime" => cfg.runtime = de::decode(value, path, sink).unwrap_or_default(),
            "admin" => cfg.admin = de::decode(value, path, sink).unwrap_or_default(),
            "access_log" => cfg.access_log = de::decode(value, path, sink).unwrap_or_default(),
            "cluster" => cfg.cluster = de::decode(value, path, sink),
            "dns" => cfg.dns = de::decode(value, path, sink).unwrap_or_default(),
            "consumers" => cfg.consumers = de::decode(value, path, sink).unwrap_or_default(),
            "oauth2" => cfg.oauth2 = de::decode(value, path, sink),
            "cache" => cfg.cache = de::decode(value, path, sink).unwrap_or_default(),
            "listeners" | "routes" => {
                let Value::Seq(items) = &value.value else {
                    let found = value.value.kind();
                    sink.borrow_mut().push(ConfigError::new(
                        path,
                        value.pos,
                        format!("expected a list, found {found}"),
                    ));
                    continue;
                };
                if name == "listeners" {
                    asm.listeners_in_document = items.len();
                }
                for (i, item) in items.iter().enumerate() {
                    if name == "listeners" {
                        if let Some(l) = de::decode(item, path.index(i), sink) {
                            cfg.listeners.push(l);
                            asm.listeners.push(i);
                        }
                    } else if let Some(r) = de::decode(item, path.index(i), sink) {
                        cfg.routes.push(r);
                        asm.routes.push(i);
                    }
                }
            }
            "upstreams" => {
                let Value::Map(entries) = &value.value else {
                    let found = value.value.kind();
                    sink.borrow_mut().push(ConfigError::new(
                        path,
                        value.pos,
                        format!("expected a mapping of upstream names to upstreams, found {found}"),
                    ));
                    continue;
                };
                for (k, v) in entries {
                    let uname = k.key_str().unwrap_or_default().to_owned();
                    match de::decode::<model::Upstream>(v, path.key(&uname), sink) {
                        Some(u) => {
                            cfg.upstreams.insert(uname, u);
                        }
                        None => {
                            let placeholder = model::Upstream {
                                targets: vec![model::Target::Address("placeholder:1".into())],
                                timeouts: Default::default(),
                                max_idle_per_target: 1,
                                concurrency: None,
                                balance: Default::default(),
                                protocol: Default::default(),
                                tls: None,
                                hash_on: None,
                                hash_bounded_load: None,
                                retries: None,
                                health_check: None,
                                outlier_detection: None,
                                on_all_unhealthy: Default::default(),
                                circuit_breaker: None,
                            };
                            cfg.upstreams.insert(uname.clone(), placeholder);
                            asm.broken_upstreams.push(uname);
                        }
                    }
                }
            }
            other => sink.borrow_mut().push(ConfigError::new(
                path.clone(),
                key.pos,
                suggest::unknown("field", other, &SECTIONS),
            )),
        }
    }
    (cfg, asm)
}

/// The JSON Schema of the configuration file (draft 2020-12).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Config);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
