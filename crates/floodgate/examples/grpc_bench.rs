//! The gRPC benchmark's origin (bench/grpc.sh): an HTTP/2 server that answers every call
//! the way a gRPC server answers a unary call, echoing the request's message, with
//! `grpc-status: 0` in the trailers. Written here so the origin costs little next to the
//! proxies it is behind (a grpcio server in Python would be the bottleneck). Listens on
//! 127.0.0.1 only.
//!
//!   grpc_bench origin PORT

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some("origin"), Some(port)) = (args.first().map(String::as_str), args.get(1)) else {
        return Err("usage: grpc_bench origin PORT".into());
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    loop {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ended = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), service_fn(unary))
                .await;
        });
    }
}

/// Answers a call with its own message and `grpc-status: 0`.
async fn unary(req: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    let message = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut resp = Response::new(Reply {
        message: Some(message),
        trailers: Some(trailers),
    });
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    Ok(resp)
}

/// A unary answer: the message, then the trailers.
struct Reply {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(m) = self.message.take() {
            return std::task::Poll::Ready(Some(Ok(Frame::data(m))));
        }
        std::task::Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}
