//! Listeners and connections: bind, accept, serve HTTP/1.1 and HTTP/2 (h2c prior knowledge)
//! on the same port (told apart by the first bytes, [`crate::sniff`]) or over TLS (told apart by ALPN; see
//! [`crate::tls_server`]), close idle connections, and drain on shutdown.
//!
//! Each connection task watches three things: the connection itself, the shutdown signal
//! (then it asks hyper for a graceful close: HTTP/1 finishes the request in flight, HTTP/2
//! sends GOAWAY and finishes open streams), and its idle deadline (no request in flight for
//! the listener's idle timeout). Every task holds a clone of a channel sender; the drain is
//! over when the last one is dropped.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use floodgate_config::model::Http1Engine;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::conn::{ConnInfo, ConnState};
use crate::gateway::Gateway;
use crate::pipeline;
use crate::sniff::{Prefixed, Protocol, sniff};

/// A bound listener, not yet accepting.
pub struct Bound {
    /// Index in the config's listener list.
    pub index: usize,
    /// The listener's name.
    pub name: String,
    /// The address actually bound (port 0 resolved).
    pub local_addr: SocketAddr,
    listener: TcpListener,
}

/// Binds every listener of the current config.
pub fn bind_all(gw: &Gateway) -> io::Result<Vec<Bound>> {
    let snap = gw.snapshot();
    let mut out = Vec::new();
    for (index, l) in snap.config.listeners.iter().enumerate() {
        let listener = bind(l.address).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {:?} on {}: {e}", l.name, l.address),
            )
        })?;
        out.push(Bound {
            index,
            name: l.name.clone(),
            local_addr: listener.local_addr()?,
            listener,
        });
    }
    Ok(out)
}

/// Binds a TCP listener with address reuse and a deep accept backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves until `shutdown` turns true, then drains for at most `drain` before returning.
pub async fn serve(
    gw: Arc<Gateway>,
    bound: Vec<Bound>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let (alive_tx, mut alive_rx) = mpsc::channel::<Infallible>(1);
    for b in bound {
        tokio::spawn(accept_loop(
            gw.clone(),
            b,
            shutdown.clone(),
            alive_tx.clone(),
        ));
    }
    drop(alive_tx);
    let mut stop = shutdown.clone();
    stopped(&mut stop).await;
    tracing::info!(timeout = ?drain, "draining connections");
    if tokio::time::timeout(drain, alive_rx.recv()).await.is_err() {
        tracing::warn!("drain timeout reached; closing the remaining connections");
    }
}

async fn accept_loop(
    gw: Arc<Gateway>,
    b: Bound,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<Infallible>,
) {
    let name: Arc<str> = Arc::from(b.name.as_str());
    let metrics = gw.metrics.listener(&b.name);
    loop {
        let accepted = tokio::select! {
            r = b.listener.accept() => r,
            _ = stopped(&mut shutdown) => break,
        };
        match accepted {
            Ok((stream, remote)) => {
                metrics.accepted.inc();
                let open = Open::new(metrics.open.clone(), alive.clone());
                tokio::spawn(serve_conn(
                    gw.clone(),
                    stream,
                    remote,
                    b.index,
                    name.clone(),
                    shutdown.clone(),
                    open,
                ));
            }
            Err(e) => {
                // Out of file descriptors or similar: back off briefly instead of spinning.
                tracing::warn!(listener = %b.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A connection counted as open (the listener's gauge) and as alive (the drain waits for
/// it) until this is dropped, by whichever task holds the connection last.
struct Open {
    gauge: prometheus_client::metrics::gauge::Gauge,
    _alive: mpsc::Sender<Infallible>,
}

impl Open {
    fn new(
        gauge: prometheus_client::metrics::gauge::Gauge,
        alive: mpsc::Sender<Infallible>,
    ) -> Self {
        gauge.inc();
        Open {
            gauge,
            _alive: alive,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Sets a connection up (the protocol sniffed, or the TLS handshake), then hands it to a
/// task of its own for serving: the setting up is a large future, and the serving task,
/// which an idle keep-alive connection keeps, then holds only what serving needs.
async fn serve_conn(
    gw: Arc<Gateway>,
    mut stream: TcpStream,
    remote: SocketAddr,
    index: usize,
    listener_name: Arc<str>,
    mut shutdown: watch::Receiver<bool>,
    open: Open,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let snap = gw.snapshot();
    let Some(plan) = snap.listeners.get(index) else {
        return;
    };
    let limits = plan.limits.clone();
    let timeouts = plan.timeouts.clone();
    let http1 = plan.http1.clone();
    let tls = plan.tls.clone();
    drop(snap);
    let first_bytes = timeouts.header_read.0.min(timeouts.idle.0);
    let served = Served {
        gw,
        remote,
        index,
        listener_name,
        limits,
        timeouts,
        http1,
        open,
    };
    match tls {
        None => {
            let protocol = tokio::select! {
                p = sniff(&mut stream) => p,
                _ = tokio::time::sleep(first_bytes) => return,
                _ = stopped(&mut shutdown) => return,
            };
            match protocol {
                Ok((p, read)) if read.is_empty() => {
                    tokio::spawn(served.serve(stream, p, None, shutdown));
                }
                // Rare (a preface split across packets).
                Ok((p, read)) => {
                    let stream = Prefixed::new(read, stream);
                    tokio::spawn(served.serve(stream, p, None, shutdown));
                }
                Err(e) => {
                    tracing::debug!(error = %e, client = %remote, "connection closed before a request")
                }
            }
        }
        // Boxed: the handshake's state is large (5 KiB with the TLS session inline), and
        // every cleartext connection's task would otherwise keep room for it.
        Some(acceptor) => Box::pin(served.serve_tls(stream, acceptor, first_bytes, shutdown)).await,
    }
}

/// A connection's settings, to serve HTTP on it once its protocol is known.
struct Served {
    gw: Arc<Gateway>,
    remote: SocketAddr,
    index: usize,
    listener_name: Arc<str>,
    limits: floodgate_config::model::Limits,
    timeouts: floodgate_config::model::ListenerTimeouts,
    http1: floodgate_config::model::Http1Settings,
    open: Open,
}

impl Served {
    /// Completes the TLS handshake (within `first_bytes`), then serves the protocol ALPN chose.
    async fn serve_tls(
        self,
        stream: TcpStream,
        acceptor: tokio_rustls::TlsAcceptor,
        first_bytes: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let remote = self.remote;
        let handshake = tokio::select! {
            r = acceptor.accept(stream) => r,
            _ = tokio::time::sleep(first_bytes) => return,
            _ = stopped(&mut shutdown) => return,
        };
        match handshake {
            Ok(stream) => {
                let conn = stream.get_ref().1;
                let protocol = match conn.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                let info = crate::tls_server::info(conn);
                // Boxed: a TLS session's state is large, and idle connections keep it.
                let stream = Box::new(floodgate_http1::Plain(stream));
                tokio::spawn(self.serve(stream, protocol, Some(info), shutdown));
            }
            Err(e) => tracing::debug!(error = %e, client = %remote, "TLS handshake failed"),
        }
    }

    /// The future that serves HTTP over `io` (cleartext or TLS) until the connection ends.
    /// (Not an `async fn`: one would keep a copy of every argument beside what it uses.)
    fn serve<I>(
        self,
        io: I,
        protocol: Protocol,
        tls: Option<crate::tls_server::TlsInfo>,
        shutdown: watch::Receiver<bool>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    where
        I: floodgate_http1::Transport,
    {
        let Served {
            gw,
            remote,
            index,
            listener_name,
            limits,
            timeouts,
            http1,
            open,
        } = self;
        let state = Arc::new(ConnState::default());
        let info = Arc::new(ConnInfo {
            client: crate::headers::ClientAddr::new(remote.ip()),
            listener: index,
            listener_name,
            remote,
            state: state.clone(),
            tls,
            body_read: timeouts.body_read.0,
        });
        let watch = Watch {
            state,
            idle: timeouts.idle.0,
            shutdown,
            _open: open,
        };
        if protocol == Protocol::Http1 && http1.engine == Http1Engine::Floodgate {
            let config = crate::http1::server_config(&limits, &timeouts, &http1);
            let conn = floodgate_http1::Connection::new(
                io,
                crate::http1::Pipeline { gw, conn: info },
                config,
            );
            return Box::pin(drive(conn, |c| c.graceful_shutdown(), watch));
        }
        Box::pin(serve_hyper(gw, info, io, protocol, limits, timeouts, watch))
    }
}

/// Serves a connection with hyper: HTTP/2, and HTTP/1.1 where `http1.engine: hyper`.
async fn serve_hyper<I: floodgate_http1::Transport>(
    gw: Arc<Gateway>,
    info: Arc<ConnInfo>,
    io: I,
    protocol: Protocol,
    limits: floodgate_config::model::Limits,
    timeouts: floodgate_config::model::ListenerTimeouts,
    watch: Watch,
) {
    let svc = service_fn(move |req| {
        let gw = gw.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(pipeline::handle(gw, info, req).await) }
    });
    // hyper answers heads beyond its buffer with a bare 431; our own, lower check in the
    // front door answers with problem+json, so hyper's cap sits above the configured limit.
    let head_cap = usize::try_from(limits.max_header_bytes.0)
        .unwrap_or(usize::MAX)
        .saturating_add(limits.max_uri_bytes.0 as usize)
        .saturating_add(8192)
        .max(8192);
    let io = TokioIo::new(io);
    match protocol {
        Protocol::Http1 => {
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(timeouts.header_read.0)
                .max_buf_size(head_cap)
                .max_headers(limits.max_headers.saturating_mul(2).max(100))
                .keep_alive(true);
            let conn = Box::pin(b.serve_connection(io, svc));
            drive(conn, |c| c.as_mut().graceful_shutdown(), watch).await;
        }
        Protocol::Http2 => {
            let mut b = http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                // WebSocket over HTTP/2 (RFC 8441).
                .enable_connect_protocol()
                .max_concurrent_streams(256)
                .max_header_list_size(u32::try_from(head_cap).unwrap_or(u32::MAX));
            let conn = Box::pin(b.serve_connection(io, svc));
            drive(conn, |c| c.as_mut().graceful_shutdown(), watch).await;
        }
    }
}

/// What a connection task watches besides the connection itself, and the connection's
/// place in the open count.
struct Watch {
    state: Arc<ConnState>,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
    /// Held, never read: the connection counts as open until the watcher is dropped.
    _open: Open,
}

/// Runs a connection until it ends, closing it gracefully on shutdown or when idle.
///
/// The connection is polled on every wake; the two watchers (shutdown, idle timer) only when
/// one of them woke the task. They get a waker of their own that marks them woken before
/// waking the task, so the reads and writes of a busy connection do not also poll a watch
/// channel and a timer each time (`select!` would poll every branch on every wake).
#[allow(clippy::manual_async_fn)] // On purpose: see inside.
fn drive<C, E>(
    mut conn: C,
    mut graceful: impl FnMut(&mut C) + Send,
    mut watch: Watch,
) -> impl Future<Output = ()> + Send
where
    C: Future<Output = Result<(), E>> + Unpin + Send,
    E: std::fmt::Display,
{
    // An async block, not an `async fn`: the arguments are used where they are, not
    // copied into the future a second time.
    async move {
        // The whole watcher is taken (a block would otherwise capture only the fields it
        // reads, and drop the open count's guard at once).
        let watch = &mut watch;
        let state = &*watch.state;
        let idle = watch.idle;
        let signal = Arc::new(WatcherSignal::default());
        // Set, so the first poll polls the watchers too (which registers their waker).
        signal.woken.store(true, Ordering::Relaxed);
        let watcher_waker = std::task::Waker::from(signal.clone());
        let mut stop = std::pin::pin!(stopped(&mut watch.shutdown));
        let mut timer = std::pin::pin!(tokio::time::sleep_until(state.idle_deadline(idle)));
        let mut closing = false;
        let result = std::future::poll_fn(|cx| {
            signal.task.register(cx.waker());
            loop {
                if let Poll::Ready(r) = std::pin::Pin::new(&mut conn).poll(cx) {
                    return Poll::Ready(r);
                }
                if closing || !signal.woken.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
                let mut wcx = std::task::Context::from_waker(&watcher_waker);
                let shut = stop.as_mut().poll(&mut wcx).is_ready();
                // The deadline moves with activity: until it has really passed, wait for the
                // new one.
                while !shut && timer.as_mut().poll(&mut wcx).is_ready() {
                    if state.idle_for(idle) {
                        break;
                    }
                    // At least a moment ahead, so a zero idle timeout cannot spin here.
                    let next = state.idle_deadline(idle);
                    timer
                        .as_mut()
                        .reset(next.max(Instant::now() + Duration::from_millis(1)));
                }
                if shut || timer.is_elapsed() {
                    closing = true;
                    graceful(&mut conn);
                    // Polled again at once: the close may be ready to finish now.
                    continue;
                }
                return Poll::Pending;
            }
        })
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// What the watchers' waker records: that a watcher woke, then wakes the connection task.
#[derive(Default)]
struct WatcherSignal {
    /// A watcher woke since they were last polled.
    woken: std::sync::atomic::AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for WatcherSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Resolves once `rx` says stop (or its sender is gone, which means the same).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; end its life here.
    let _gone_or_stopped = rx.wait_for(|s| *s).await.is_ok();
}
