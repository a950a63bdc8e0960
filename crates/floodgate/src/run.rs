//! Running the gateway: load the config, build the runtime with the configured worker count,
//! bind, serve, reload on file change or SIGHUP, and drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floodgate_config::ValidConfig;
use floodgate_proxy::access_log::AccessLog;
use floodgate_proxy::gateway::ReloadRecord;
use floodgate_proxy::{Gateway, Metrics, server};
use tokio::sync::{mpsc, watch};

use crate::logging;

/// Addresses the gateway ended up on, for callers that print them (the demo).
pub(crate) struct Started {
    pub(crate) listeners: Vec<(String, SocketAddr)>,
    pub(crate) admin: SocketAddr,
}

/// `floodgate run -c FILE`.
pub(crate) fn run_file(path: &Path) -> ExitCode {
    logging::init();
    let cfg = match crate::commands::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); not started",
                path.display(),
                errors.0.len()
            );
            return ExitCode::from(1);
        }
    };
    run_config(cfg, Some(path.to_path_buf()), |_| {})
}

/// Builds the runtime for `cfg` and serves until a shutdown signal. `watch` is the file to
/// reload from, if any; `on_start` sees the bound addresses.
pub(crate) fn run_config(
    cfg: ValidConfig,
    watch: Option<PathBuf>,
    on_start: impl FnOnce(&Started),
) -> ExitCode {
    let workers = cfg
        .runtime
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(cfg, watch, workers, on_start)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            tracing::error!(error = %msg, "floodgate stopped");
            eprintln!("floodgate: {msg}");
            ExitCode::from(1)
        }
    }
}

async fn serve(
    cfg: ValidConfig,
    watch_path: Option<PathBuf>,
    workers: usize,
    on_start: impl FnOnce(&Started),
) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let access_log = if cfg.access_log.enabled {
        AccessLog::start(&cfg.access_log.output, metrics.clone())
            .map_err(|e| format!("access log {:?}: {e}", cfg.access_log.output))?
    } else {
        AccessLog::disabled(metrics.clone())
    };
    let drain = cfg.runtime.shutdown_timeout.0;
    let admin_addr = cfg.admin.address;
    let gw = Gateway::new(cfg, metrics, access_log).map_err(|e| e.to_string())?;
    let bound = server::bind_all(&gw).map_err(|e| format!("cannot bind: {e}"))?;
    let admin = server::bind(admin_addr)
        .map_err(|e| format!("cannot bind the admin listener on {admin_addr}: {e}"))?;
    let started = Started {
        listeners: bound
            .iter()
            .map(|b| (b.name.clone(), b.local_addr))
            .collect(),
        admin: admin.local_addr().map_err(|e| e.to_string())?,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(floodgate_admin::serve(admin, gw.clone(), ready.clone()));
    gw.start_background();
    let serving = tokio::spawn(server::serve(gw.clone(), bound, shutdown_rx.clone(), drain));
    if let Some(path) = watch_path {
        spawn_reloader(gw.clone(), path)?;
    }
    // Installed before readiness is announced: a SIGTERM that arrives right after must find
    // a handler, not the default action (which would kill the process mid-request).
    let shutdown_signal = shutdown_signal();
    ready.store(true, Ordering::Release);
    // Logged once everything (listeners, admin, reloader, signal handlers) is in place: tools
    // and tests take these lines as the sign that the gateway is ready.
    for (name, addr) in &started.listeners {
        tracing::info!(listener = %name, address = %addr, "listening");
    }
    tracing::info!(address = %started.admin, workers, "admin listening");
    on_start(&started);

    shutdown_signal.await;
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    ready.store(false, Ordering::Release);
    if shutdown_tx.send(true).is_err() {
        tracing::warn!("no task was listening for shutdown");
    }
    if let Err(e) = serving.await {
        tracing::error!(error = %e, "server task failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Registers for SIGTERM and SIGINT now (when called, not when first polled) and returns a
/// future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    tracing::warn!("cannot install signal handlers; stopping on Ctrl-C only");
                    if tokio::signal::ctrl_c().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Reloads on SIGHUP and when the config file changes. The directory is watched, not the
/// file, because editors and config management replace files by renaming over them.
fn spawn_reloader(gw: Arc<Gateway>, path: PathBuf) -> Result<(), String> {
    use notify::{RecursiveMode, Watcher};

    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let file_name = path.file_name().map(|f| f.to_os_string());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(ev) = event {
            let ours = ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|f| f.to_os_string()) == file_name);
            let relevant = matches!(
                ev.kind,
                notify::EventKind::Create(_) | notify::EventKind::Modify(_)
            );
            if ours && relevant && file_tx.send("file change").is_err() {
                // The reloader has stopped; nothing to notify.
            }
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;

    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup =
            signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        let hup_tx = tx.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if hup_tx.send("SIGHUP").is_err() {
                    break;
                }
            }
        });
    }

    tokio::spawn(async move {
        let _watcher = watcher;
        while let Some(mut cause) = rx.recv().await {
            // Writes come in bursts (truncate, write, close): let the burst settle, then
            // read the file once.
            while let Ok(Some(more)) =
                tokio::time::timeout(Duration::from_millis(30), rx.recv()).await
            {
                cause = more;
            }
            reload(&gw, &path, cause);
        }
    });
    Ok(())
}

fn reload(gw: &Arc<Gateway>, path: &Path, cause: &str) {
    let record = |outcome: Result<u64, String>, changes: Vec<String>| {
        gw.metrics.reload(outcome.is_ok());
        gw.record_reload(ReloadRecord {
            at: std::time::SystemTime::now(),
            cause: cause.to_owned(),
            outcome,
            changes,
        });
    };
    match crate::commands::load(path) {
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(cause, file = %e.file, line = e.pos.line, column = e.pos.column, field = %e.path, "{}", e.message);
            }
            tracing::error!(
                cause,
                errors = errors.0.len(),
                "configuration refused; the running configuration is kept"
            );
            record(Err(errors.to_string()), Vec::new());
        }
        Ok(cfg) => match gw.reload(cfg) {
            Ok((generation, changes)) => {
                let summary = if changes.is_empty() {
                    "nothing".to_owned()
                } else {
                    changes.join("; ")
                };
                tracing::info!(cause, generation, changes = %summary, "configuration reloaded");
                record(Ok(generation), changes);
            }
            Err(e) => {
                tracing::error!(cause, "configuration refused: {e}");
                record(Err(e.to_string()), Vec::new());
            }
        },
    }
}
