//! Process logs: JSON lines on stderr (the access log is separate, see the proxy crate).
//! The level comes from `FLOODGATE_LOG` (e.g. `debug`, `floodgate_proxy=debug`), default info.

use tracing_subscriber::EnvFilter;

pub(crate) fn init() {
    let filter =
        EnvFilter::try_from_env("FLOODGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let result = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
    if result.is_err() {
        eprintln!("floodgate: logging was already initialised");
    }
}
