//! Telling HTTP/1.1 from HTTP/2 with prior knowledge (h2c) by a cleartext connection's
//! first bytes, without costing anything while a client sends them slowly.
//!
//! The common case peeks: the first packet decides (it differs from the HTTP/2 preface, or
//! holds all of it), nothing is consumed, and hyper reads the connection as it is. When
//! the first packet is only part of the preface, peeking again would find the socket
//! readable at once and spin; so the bytes are read instead, each read waiting for the
//! socket to become readable, and the connection is handed on as a [`Prefixed`] stream
//! that gives hyper those bytes before the rest.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Which protocol a client speaks: by its first bytes (cleartext) or ALPN (TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2 with prior knowledge: the connection starts with the client preface.
    Http2,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol the bytes so far decide, if they do.
fn decide(first: &[u8]) -> Option<Protocol> {
    if first != &H2_PREFACE[..first.len().min(H2_PREFACE.len())] {
        Some(Protocol::Http1)
    } else if first.len() >= H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// The protocol of a new connection, and the bytes read (not just peeked) to learn it,
/// which must reach hyper before the rest of the stream. The caller bounds the wait.
pub async fn sniff(stream: &mut TcpStream) -> io::Result<(Protocol, Vec<u8>)> {
    let mut buf = [0u8; 24];
    let n = stream.peek(&mut buf).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
    }
    if let Some(p) = decide(&buf[..n]) {
        return Ok((p, Vec::new()));
    }
    // Part of the preface: read exactly what is still undecided, waiting between reads.
    let mut read = Vec::with_capacity(H2_PREFACE.len());
    loop {
        let want = H2_PREFACE.len() - read.len();
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        read.extend_from_slice(&buf[..n]);
        if let Some(p) = decide(&read) {
            return Ok((p, read));
        }
    }
}

/// A stream that yields `prefix` before reading from `inner` (writes go straight through).
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `prefix` read first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl Prefixed<tokio::net::TcpStream> {
    /// Ready once reading may make progress: at once while bytes of the prefix remain,
    /// then when the socket is readable (so an idle connection needs no read buffer).
    pub fn poll_ready_to_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_read_ready(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let rest = &this.prefix[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn one_packet_decides_without_consuming() {
        let (mut c, mut s) = pair().await;
        c.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let (p, read) = sniff(&mut s).await.expect("sniff");
        assert_eq!((p, read.len()), (Protocol::Http1, 0));

        let (mut c, mut s) = pair().await;
        c.write_all(H2_PREFACE).await.expect("write");
        let (p, read) = sniff(&mut s).await.expect("sniff");
        assert_eq!((p, read.len()), (Protocol::Http2, 0));
        let mut buf = [0u8; 24];
        assert_eq!(
            s.peek(&mut buf).await.expect("peek"),
            24,
            "nothing consumed"
        );
    }

    #[tokio::test]
    async fn a_split_preface_is_read_and_handed_on_whole() {
        let (mut c, mut s) = pair().await;
        c.write_all(&H2_PREFACE[..10]).await.expect("write");
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(&H2_PREFACE[10..]).await.expect("write");
            c.write_all(b"frames").await.expect("write");
            c
        });
        let (p, read) = sniff(&mut s).await.expect("sniff");
        assert_eq!(p, Protocol::Http2);
        assert_eq!(read, H2_PREFACE, "exactly the preface is read");
        let mut stream = Prefixed::new(read, s);
        let mut all = vec![0u8; 30];
        stream.read_exact(&mut all).await.expect("read");
        assert_eq!(&all[..24], H2_PREFACE);
        assert_eq!(&all[24..], b"frames");
        drop(rest.await);
    }

    #[tokio::test]
    async fn a_false_start_is_http1_with_its_bytes() {
        let (mut c, mut s) = pair().await;
        c.write_all(b"PRI").await.expect("write");
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(b"NT / HTTP/1.1\r\n").await.expect("write");
            c
        });
        let (p, read) = sniff(&mut s).await.expect("sniff");
        assert_eq!(p, Protocol::Http1);
        assert!(read.starts_with(b"PRINT"), "{read:?}");
        drop(rest.await);

        let (c, mut s) = pair().await;
        drop(c);
        assert!(
            sniff(&mut s).await.is_err(),
            "a closed connection is no protocol"
        );
    }
}
