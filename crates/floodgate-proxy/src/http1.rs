//! The listener's HTTP/1.1 side on the gateway's own engine ([`floodgate_http1`]): the
//! request pipeline as the engine's service, the engine's refusals of malformed heads as
//! problem+json, and the transports a connection may run over.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use floodgate_config::model::{Http1Settings, Limits, ListenerTimeouts};
use floodgate_http1::{HeadError, HeadLimits, IncomingBody, ServerConfig, Service, Transport};
use http::{Request, Response};
use tokio::net::TcpStream;

use crate::body::ResponseBody;
use crate::client_body::ClientBody;
use crate::conn::ConnInfo;
use crate::gateway::Gateway;
use crate::pipeline;
use crate::problem::Problem;
use crate::sniff::Prefixed;

/// The request pipeline, serving one connection's requests.
pub(crate) struct Pipeline {
    pub(crate) gw: Arc<Gateway>,
    pub(crate) conn: Arc<ConnInfo>,
}

impl Service for Pipeline {
    type Body = ResponseBody;
    type Future = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

    fn call(&mut self, req: Request<IncomingBody>) -> Self::Future {
        let body_read = self.conn.body_read;
        let req = req.map(|body| ClientBody::engine(body, body_read));
        Box::pin(pipeline::serve(self.gw.clone(), self.conn.clone(), req))
    }

    fn refuse(&mut self, error: HeadError) -> Response<ResponseBody> {
        let problem = refusal(error);
        self.gw
            .metrics
            .refused(&self.conn.listener_name, problem.code());
        tracing::debug!(
            client = %self.conn.remote,
            status = problem.status().as_u16(),
            reason = error.reason(),
            "request head refused"
        );
        let request_id = crate::request_id::generate();
        problem
            .to_response("", request_id.to_str().unwrap_or_default())
            .map(ResponseBody::full)
    }
}

/// The problem that answers a refused head.
pub(crate) fn refusal(error: HeadError) -> Problem {
    match error {
        HeadError::Malformed(why) => Problem::BadRequest(why),
        HeadError::Framing(f) => match f {
            floodgate_http1::framing::FramingError::UnknownCoding => {
                Problem::NotImplemented(error.reason())
            }
            _ => Problem::BadRequest(error.reason()),
        },
        HeadError::UriTooLong => Problem::UriTooLong,
        HeadError::TooLarge => Problem::HeadersTooLarge,
        HeadError::Version => Problem::VersionNotSupported,
        HeadError::Timeout => Problem::HeadTimeout,
    }
}

/// The engine's settings for a listener. The head limit sits above the configured ones,
/// as hyper's did: the front door checks those and answers with its own problems (for
/// HTTP/2 too); the engine's cap only bounds what a connection may make it buffer.
pub(crate) fn server_config(
    limits: &Limits,
    timeouts: &ListenerTimeouts,
    http1: &Http1Settings,
) -> ServerConfig {
    let head_cap = usize::try_from(limits.max_header_bytes.0)
        .unwrap_or(usize::MAX)
        .saturating_add(usize::try_from(limits.max_uri_bytes.0).unwrap_or(usize::MAX))
        .saturating_add(8192)
        .max(8192);
    ServerConfig {
        head: HeadLimits {
            max_bytes: head_cap,
            max_fields: limits.max_headers.saturating_mul(2).max(100),
        },
        read_buffer: usize::try_from(http1.read_buffer.0).unwrap_or(8192),
        write_buffer: usize::try_from(http1.write_buffer.0).unwrap_or(16384),
        header_read_timeout: timeouts.header_read.0,
        linger: timeouts.header_read.0.min(Duration::from_secs(2)),
        ..ServerConfig::default()
    }
}

impl Transport for Prefixed<TcpStream> {
    fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_ready_to_read(cx)
    }
}
