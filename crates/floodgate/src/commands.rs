//! The commands that do not serve: `validate`, `explain`, `schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use floodgate_proxy::admission::AdmissionRegistry;
use floodgate_proxy::ratelimit::LimiterRegistry;
use floodgate_proxy::snapshot::{Shared, Snapshot};
use floodgate_proxy::{Metrics, upstream::Pools};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

/// Reads `${VAR}` references from the process environment.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads a configuration file with every check, the runtime's included, so that what
/// `run` would refuse at start is refused here first, with its place in the file.
pub(crate) fn load(
    path: &Path,
) -> Result<floodgate_config::ValidConfig, floodgate_config::ConfigErrors> {
    floodgate_config::load_file_with(path, &process_env, &floodgate_proxy::startup::checks)
}

pub(crate) fn validate(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match load(f) {
            Ok(cfg) => println!(
                "{}: ok ({} listeners, {} upstreams, {} routes)",
                f.display(),
                cfg.listeners.len(),
                cfg.upstreams.len(),
                cfg.routes.len()
            ),
            Err(errors) => {
                failed = true;
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", f.display(), errors.0.len());
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub(crate) fn explain(
    config: &Path,
    listener: Option<&str>,
    method: &str,
    url: &str,
    headers: &[String],
) -> ExitCode {
    let cfg = match load(config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        eprintln!("{method:?} is not an HTTP method");
        return ExitCode::from(2);
    };
    let Ok(uri) = url.parse::<Uri>() else {
        eprintln!("{url:?} is not a URL (example: http://shop.example.com/api/products/42)");
        return ExitCode::from(2);
    };
    let mut map = HeaderMap::new();
    for h in headers {
        let parsed = h.split_once(':').and_then(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        match parsed {
            Some((k, v)) => {
                map.append(k, v);
            }
            None => {
                eprintln!("{h:?} is not a header: write -H 'name: value'");
                return ExitCode::from(2);
            }
        }
    }
    let metrics = Metrics::new();
    let cache = floodgate_proxy::cache::CacheState::new(&cfg.cache);
    let snap = Snapshot::build(
        cfg,
        1,
        &Shared {
            pools: &Pools::default(),
            metrics: &metrics,
            limiters: &LimiterRegistry::default(),
            admissions: &AdmissionRegistry::default(),
            breakers: &Default::default(),
            existence: &Default::default(),
            idempotency: &Default::default(),
            tunnels: &Default::default(),
            cache: &cache,
            listener_tls: &[],
            cluster: None,
        },
    );
    let explained = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(floodgate_proxy::explain::explain(
                &snap, listener, &method, &uri, &map,
            ))
        });
    match explained {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn schema() -> ExitCode {
    match serde_json::to_string_pretty(&floodgate_config::json_schema()) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot render the schema: {e}");
            ExitCode::from(1)
        }
    }
}
