//! Test support: the real `floodgate` binary started on port 0 with a config written by the
//! test, upstream servers written in the test, and small HTTP client helpers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// How long the harness waits for anything the gateway should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The most any test that starts a gateway may take (the slowest take about 20 s). Past
/// it the whole run stops with the test's name, so a behaviour that hangs fails CI in
/// minutes instead of holding it until its own timeout.
pub const TEST_DEADLINE: Duration = Duration::from_secs(180);

/// A running gateway process.
pub struct Gateway {
    /// Dropped with the gateway: ends the test's watchdog.
    _watchdog: std::sync::mpsc::Sender<()>,
    child: Child,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: SocketAddr,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Gateway {
    /// Starts `floodgate run` on `config`; `{dir}` in the config is replaced by the test's
    /// temporary directory. Waits until the admin listener is up.
    pub fn start(config: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("floodgate.yaml");
        let config = config.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_floodgate"))
            .args(["run", "-c"])
            .arg(&config_path)
            // TEST_GW_LOG (say `floodgate_proxy=debug,info`) shows more of the gateway in
            // a failing test's output.
            .env(
                "FLOODGATE_LOG",
                std::env::var("TEST_GW_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn floodgate");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new((Mutex::new(Vec::<String>::new()), Condvar::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lock, cv) = &*sink;
                lock.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        let mut gw = Gateway {
            _watchdog: watchdog(),
            child,
            dir,
            config_path,
            listeners: HashMap::new(),
            admin: "0.0.0.0:0".parse().unwrap(),
            lines,
        };
        let admin_line = gw
            .wait_log("\"admin listening\"")
            .unwrap_or_else(|| panic!("gateway did not start:\n{}", gw.log()));
        gw.admin = json_field(&admin_line, "address")
            .parse()
            .expect("admin address");
        for line in gw.log().lines() {
            if line.contains("\"message\":\"listening\"") {
                let name = json_field(line, "listener");
                gw.listeners.insert(
                    name,
                    json_field(line, "address")
                        .parse()
                        .expect("listener address"),
                );
            }
        }
        gw
    }

    /// The address of the listener called `public`, or the only one.
    pub fn addr(&self) -> SocketAddr {
        self.listeners
            .get("public")
            .copied()
            .or_else(|| self.listeners.values().next().copied())
            .expect("a listener")
    }

    /// `http://<public listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    /// Waits for a log line containing `needle` (searching from the start); `None` on timeout.
    pub fn wait_log(&self, needle: &str) -> Option<String> {
        self.wait_log_count(needle, 1)
    }

    /// Waits until `count` log lines contain `needle`; returns the last of them.
    pub fn wait_log_count(&self, needle: &str, count: usize) -> Option<String> {
        let (lock, cv) = &*self.lines;
        let deadline = Instant::now() + PATIENCE;
        let mut lines = lock.lock().unwrap();
        loop {
            let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
            if found.len() >= count {
                return found.last().map(|s| s.to_string());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Sends a signal to the gateway process (which this test started).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the gateway process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, _, body) = get(&format!("http://{}/metrics", self.admin)).await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).expect("utf8 metrics")
    }

    /// The value of one series (`name{labels}` exactly as exposed), or 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Replaces the config file atomically (write a sibling, rename over), as deploy tools do.
    pub fn write_config(&self, config: &str) {
        let tmp = self.dir.path().join(".floodgate.yaml.tmp");
        let config = config.replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(&tmp, config).expect("write temp config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _killed = self.child.kill().is_ok();
            let _reaped = self.child.wait().is_ok();
        }
        // Every process log line of every test is one JSON object without a repeated key
        // (`jq` and most log stores keep only the last of two).
        if !std::thread::panicking() {
            for line in self.lines.0.lock().unwrap().iter() {
                if let Err(why) = check_log_line(line) {
                    panic!("log line {line:?}: {why}");
                }
            }
        }
    }
}

/// Whether `line` is a JSON object none of whose objects repeats a key.
pub fn check_log_line(line: &str) -> Result<(), String> {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

    struct Unique;
    impl<'de> Visitor<'de> for Unique {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!("key {key:?} repeated")));
                }
                map.next_value::<UniqueValue>()?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element::<UniqueValue>()?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    struct UniqueValue;
    impl<'de> serde::Deserialize<'de> for UniqueValue {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Unique).map(|()| UniqueValue)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    (&mut de)
        .deserialize_map(Unique)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// A thread that ends the whole test run if the calling test outlives [`TEST_DEADLINE`];
/// dropping the returned sender (the test ended) stops it.
fn watchdog() -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TEST_DEADLINE) {
            eprintln!("{test} is still running after {TEST_DEADLINE:?}: stopping the run");
            std::process::exit(101);
        }
    });
    tx
}

/// A string field of a JSON log line.
pub fn json_field(line: &str, field: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {line}"))
        .to_string()
}

/// A test upstream server on 127.0.0.1:0 answering every request with `handler`.
pub async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    upstream_on("127.0.0.1:0", handler).await
}

/// A test upstream server bound to `bind` (such as `127.0.0.2:0`).
pub async fn upstream_on<F, Fut>(bind: &str, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ended = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An upstream that answers with a JSON echo of what it received.
pub async fn echo_upstream() -> SocketAddr {
    upstream(|req: Request<Incoming>| async move {
        let mut headers: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in req.headers() {
            headers
                .entry(k.to_string())
                .or_default()
                .push(v.to_str().unwrap_or("?").to_string());
        }
        let echo = serde_json::json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "headers": headers,
        });
        json_response(StatusCode::OK, &echo)
    })
    .await
}

pub fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` and collects the response.
pub async fn send(req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
    let resp = client().request(req).await.expect("request");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// `GET url`.
pub async fn get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(Request::get(url).body(Full::new(Bytes::new())).unwrap()).await
}

/// `GET url` with headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Parses a JSON body.
pub fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// Asserts a problem+json response with `status`, and returns its fields.
pub fn assert_problem(
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
    expected: StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(status, expected, "body: {}", String::from_utf8_lossy(body));
    assert_eq!(headers["content-type"], "application/problem+json");
    let v = json(body);
    assert_eq!(v["status"], expected.as_u16());
    assert_eq!(v["type"], format!("urn:floodgate:problem:{code}"));
    assert_eq!(
        v["request_id"].as_str(),
        headers.get("x-request-id").and_then(|h| h.to_str().ok())
    );
    v
}

/// A port on 127.0.0.1 where nothing listens: bound for as long as this lives but never
/// listening, so connections to it are refused and no other test can take the port.
pub struct ClosedPort {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl std::fmt::Display for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    ClosedPort {
        addr: socket.local_addr().expect("addr"),
        _socket: socket,
    }
}

/// A port on 127.0.0.1 free now, for a server the test starts on it (released at once, so
/// another process may take it first; use only where the port must be chosen ahead).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Minimal gateway config: one listener, one upstream, then `routes` (YAML list items) and
/// `extra` (more top-level YAML).
pub fn config(upstream: SocketAddr, routes: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\naccess_log:\n  output: {{dir}}/access.log\nupstreams:\n  backend:\n    targets: [ \"{upstream}\" ]\nroutes:\n{routes}\n{extra}\n"
    )
}

/// A body of `total` bytes produced in `chunk`-sized frames on the fly, with no declared
/// length (so it goes chunked): streams of any size without holding them in memory.
pub struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    pub fn new(total: u64, chunk: usize) -> Self {
        Generated {
            remaining: total,
            chunk: Bytes::from(vec![b'z'; chunk]),
        }
    }
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..n)))))
    }
}

impl Gateway {
    /// The first access-log line (from `{dir}/access.log`) containing `needle`, parsed;
    /// waits for the writer thread up to [`PATIENCE`].
    pub async fn access_line(&self, needle: &str) -> serde_json::Value {
        let path = self.dir.path().join("access.log");
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return serde_json::from_str(line).expect("access log JSON");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no access log line with {needle:?} in:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The Redis of service-backed tests: `FLOODGATE_TEST_REDIS_URL` (set by .ci/run), or the
/// machine's own on the standard port. It must answer: a test fails rather than pass
/// without having run, unless skipping is asked for with `FLOODGATE_TEST_SKIP_REDIS=1`
/// (then it says so and returns `None`).
pub fn redis_url() -> Option<String> {
    if std::env::var("FLOODGATE_TEST_SKIP_REDIS").is_ok_and(|v| v == "1") {
        eprintln!("skipped: FLOODGATE_TEST_SKIP_REDIS=1 (this test needs Redis)");
        return None;
    }
    let url = std::env::var("FLOODGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let address = url
        .trim_start_matches("redis://")
        .split(['/', '@'])
        .find(|part| part.contains(':'))
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    if std::net::TcpStream::connect_timeout(
        &address.parse().expect("a host:port in the Redis URL"),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!(
            "Redis at {url} does not answer. Start it (see the README), point \
             FLOODGATE_TEST_REDIS_URL at one, or skip the Redis-backed tests with \
             FLOODGATE_TEST_SKIP_REDIS=1."
        );
    }
    Some(url)
}

/// A Redis key prefix no other test run shares.
pub fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("fgtest:{}:{nanos}:", std::process::id())
}

/// `POST body` to `path` on the gateway's admin listener: the status and the JSON answer.
pub async fn admin_post(gw: &Gateway, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::post(format!("http://{}{path}", gw.admin))
        .body(Full::from(body.to_owned()))
        .unwrap();
    let (s, _, b) = send(req).await;
    (s, json(&b))
}

/// The statuses of `n` sequential `GET url` requests with `headers`.
pub async fn statuses(url: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_with(url, headers).await.0.as_u16());
    }
    out
}

/// A server that answers 200 with its `name` as the body and in `x-target`.
pub async fn named_upstream(name: &'static str) -> SocketAddr {
    upstream(move |_req| async move {
        let mut resp = Response::new(full(name));
        resp.headers_mut()
            .insert("x-target", http::HeaderValue::from_static(name));
        resp
    })
    .await
}

/// A gateway with `upstreams` and `routes` (YAML, indented as list items of their
/// sections), one listener `public`, no access log.
pub fn gateway_with(upstreams: &str, routes: &str) -> Gateway {
    Gateway::start(&config_with(upstreams, routes))
}

/// The config [`gateway_with`] runs (for tests that rewrite it to reload).
pub fn config_with(upstreams: &str, routes: &str) -> String {
    format!(
        "listeners: [ {{ name: public, address: \"127.0.0.1:0\" }} ]
admin: {{ address: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
upstreams:
{upstreams}
routes:
{routes}
"
    )
}

/// A gateway with one upstream called `pool` (`upstream_yaml`: its fields, indented four
/// spaces) that takes every request.
pub fn pool_gateway(upstream_yaml: &str) -> Gateway {
    gateway_with(
        &format!("  pool:\n{upstream_yaml}"),
        "  - match: { path_prefix: / }\n    upstream: pool",
    )
}

/// The Python of a venv holding the independent peers listed in tests/it/python-peers.txt,
/// made once per target directory (and again when the list changes), from PyPI. Test
/// processes take a file lock so only one builds it.
pub fn python_peers() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let wanted = include_str!("python-peers.txt");
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-peers");
            let python = dir.join("bin/python3");
            std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).expect("target tmp dir");
            let lock = std::fs::File::create(dir.with_extension("lock")).expect("lock file");
            lock.lock().expect("lock");
            let marker = dir.join("installed.txt");
            if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted) {
                let _ = std::fs::remove_dir_all(&dir);
                let ok = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&dir)
                    .status()
                    .expect("python3 -m venv")
                    .success();
                assert!(ok, "python3 -m venv failed");
                let list = dir.join("requirements.txt");
                std::fs::write(&list, wanted).expect("requirements");
                let ok = Command::new(dir.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(&list)
                    .status()
                    .expect("pip install")
                    .success();
                assert!(
                    ok,
                    "pip install of the Python peers failed (PyPI reachable?)"
                );
                std::fs::write(&marker, wanted).expect("marker");
            }
            python
        })
        .clone()
}

/// Runs `code` with the peers' Python; its standard output, trimmed.
/// A peer script of tests/it/peers/ running in the Python peers' venv, stopped by its PID
/// when dropped. The script prints the port it listens on first.
pub struct PythonPeer {
    child: std::process::Child,
    /// Where it listens (127.0.0.1).
    pub port: u16,
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _killed = self.child.kill().is_ok();
        let _reaped = self.child.wait().is_ok();
    }
}

/// Starts tests/it/peers/`script`; the peer, and the lines it prints after its port.
pub fn python_peer(
    script: &str,
) -> (
    PythonPeer,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(python_peers())
        .arg(format!(
            "{}/tests/it/peers/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{script} printed no port"));
    (PythonPeer { child, port }, lines)
}

/// Runs the client script tests/it/peers/`script` with `args`; the JSON object it printed,
/// or what it said on stderr when it failed.
pub fn python_client(script: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new(python_peers())
        .arg(format!(
            "{}/tests/it/peers/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .output()
        .map_err(|e| format!("run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{script} printed no JSON: {e}"))
}

/// An upstream serving a small HTML page at every path: somewhere for a browser to load a
/// page from, its address an origin of its own.
pub async fn html_page() -> SocketAddr {
    upstream(|_req| async {
        let mut r = Response::new(full("<!doctype html><title>page</title><p>page</p>"));
        r.headers_mut()
            .insert("content-type", http::HeaderValue::from_static("text/html"));
        r
    })
    .await
}

/// Runs the browser peer tests/it/peers/`script` (see peers/browser.js) with a page from
/// `allowed`, one from `denied`, and `target`; the JSON object it printed.
pub fn browser_compare(
    script: &str,
    allowed: SocketAddr,
    denied: SocketAddr,
    target: &str,
) -> serde_json::Value {
    let out = Command::new("node")
        .arg(format!(
            "{}/tests/it/peers/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(format!("http://{allowed}/"))
        .arg(format!("http://{denied}/"))
        .arg(target)
        .env("NODE_PATH", node_peers().join("node_modules"))
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "the browser run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the browser run")
}

pub fn run_python(code: &str) -> String {
    let out = Command::new(python_peers())
        .args(["-c", code])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The directory of a node_modules holding the JavaScript peers listed in
/// tests/it/peers/package.json (playwright-core), installed once per target directory from
/// npm. No browser is downloaded: the tests drive Debian's chromium.
pub fn node_peers() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let wanted = include_str!("peers/package.json");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-peers");
        std::fs::create_dir_all(&dir).expect("node peers dir");
        let lock = std::fs::File::create(dir.with_extension("lock")).expect("lock file");
        lock.lock().expect("lock");
        let marker = dir.join("installed.json");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted) {
            std::fs::write(dir.join("package.json"), wanted).expect("package.json");
            let ok = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&dir)
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
                .status()
                .expect("npm install")
                .success();
            assert!(
                ok,
                "npm install of the JavaScript peers failed (npm registry reachable?)"
            );
            std::fs::write(&marker, wanted).expect("marker");
        }
        dir
    })
    .clone()
}

/// Writes `request` (raw bytes) on a new connection to `addr` and reads until the gateway
/// closes it or a whole response (by its `Content-Length`) has arrived; the text read.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    tokio::time::timeout(PATIENCE, crate::headers::read_response(&mut s))
        .await
        .expect("an answer or a close in time")
}

impl Gateway {
    /// Waits until `count` access-log lines contain `needle`; returns them parsed.
    pub async fn access_lines(&self, needle: &str, count: usize) -> Vec<serde_json::Value> {
        let path = self.dir.path().join("access.log");
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let found: Vec<serde_json::Value> = text
                .lines()
                .filter(|l| l.contains(needle))
                .map(|l| serde_json::from_str(l).expect("access log JSON"))
                .collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {count} access log lines with {needle:?} in:\n{text}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// An upstream that answers every connection's first request head with `response` (raw
/// bytes, framing errors included) and then closes it.
pub async fn raw_upstream(response: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _sent = s.write_all(response).await;
            });
        }
    });
    addr
}

/// Waits until `check` holds, polling every few milliseconds; fails the test with `what`
/// after [`PATIENCE`] instead of hanging.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
