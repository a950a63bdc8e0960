//! The gateway's own small HTTP client, for the documents policies fetch (a JWKS, token
//! introspection): one request per connection, HTTP/1.1, TLS with verified certificates
//! (the upstream TLS code), a timeout and a size limit. No redirects, no pooling: these
//! requests are rare and their answers cached.

use std::time::Duration;

use bytes::Bytes;
use floodgate_config::model::UpstreamTls;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

/// The longest a fetch may take, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `req` (absolute URI) and reads the answer, at most `max_bytes` of body.
pub async fn send(
    req: Request<Bytes>,
    tls: Option<&UpstreamTls>,
    max_bytes: usize,
) -> Result<(StatusCode, Bytes), String> {
    tokio::time::timeout(TIMEOUT, send_now(req, tls, max_bytes))
        .await
        .map_err(|_| "no answer in time".to_owned())?
}

async fn send_now(
    req: Request<Bytes>,
    tls: Option<&UpstreamTls>,
    max_bytes: usize,
) -> Result<(StatusCode, Bytes), String> {
    let (mut parts, body) = req.into_parts();
    let host = parts.uri.host().ok_or("the URL has no host")?.to_owned();
    let https = parts.uri.scheme_str() == Some("https");
    let port = parts.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_matches(['[', ']']).to_owned();
    let address = if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    };
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    let io = if https {
        let default = UpstreamTls {
            ca_file: None,
            server_name: None,
            client_cert: None,
            client_key: None,
        };
        crate::upstream::tls::TlsSetup::new(tls.unwrap_or(&default), &bare, b"http/1.1")?
            .connect(tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?
    } else {
        crate::upstream::tls::MaybeTls::Plain(tcp)
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or(host);
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
    );
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let req = Request::from_parts(parts, http_body_util::Full::new(body));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}
