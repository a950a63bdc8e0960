//! The demo catalog's WebSocket echo (`GET /ws/echo`): just enough of RFC 6455 to answer a
//! handshake and send every message back, so a browser or any WebSocket client can try
//! the gateway's tunnels. (Hand-written: a WebSocket library for one demo endpoint would
//! be a dependency the gateway itself does not need; the gateway tunnels bytes and never
//! parses frames.) Messages are at most 1 MiB; pings are answered; a close is echoed.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest message payload echoed.
const MAX_PAYLOAD: u64 = 1 << 20;

/// Answers a handshake with 101 and echoes on the upgraded connection; anything that is
/// not a handshake gets 426.
pub(crate) fn answer(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = key.filter(|_| upgrade) else {
        let mut resp = Response::new(Full::from(
            "a WebSocket endpoint: connect with a WebSocket client\n",
        ));
        *resp.status_mut() = StatusCode::UPGRADE_REQUIRED;
        resp.headers_mut().insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        return resp;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let _ended = echo(TokioIo::new(upgraded)).await;
        }
    });
    let mut resp = Response::new(Full::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    let accept = floodgate_proxy::websocket::accept_for(key.as_bytes());
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

/// Echoes frames until a close (echoed) or the end of the connection.
async fn echo<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await?;
        let (fin_and_opcode, masked) = (head[0], head[1] & 0x80 != 0);
        let len = match head[1] & 0x7f {
            126 => u64::from(io.read_u16().await?),
            127 => io.read_u64().await?,
            n => u64::from(n),
        };
        if !masked || len > MAX_PAYLOAD {
            // A client's frames are masked (§5.1); a huge one is not ours to echo.
            return Ok(());
        }
        let mut mask = [0u8; 4];
        io.read_exact(&mut mask).await?;
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
        io.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        let opcode = fin_and_opcode & 0x0f;
        let reply = match opcode {
            0x9 => 0x80 | 0xA, // ping → pong
            0xA => continue,   // an unasked pong
            _ => fin_and_opcode,
        };
        io.write_all(&frame(reply, &payload)).await?;
        if opcode == 0x8 {
            return io.shutdown().await;
        }
    }
}

/// A server frame (unmasked) with this first byte and payload.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=65535 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_echoed_unmasked_and_pings_answered() {
        let (mut client, server) = tokio::io::duplex(4096);
        tokio::spawn(echo(server));
        let masked = |first: u8, payload: &[u8]| {
            let mask = [1u8, 2, 3, 4];
            let mut f = vec![first, 0x80 | payload.len() as u8];
            f.extend_from_slice(&mask);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            f
        };
        client.write_all(&masked(0x81, b"hello")).await.unwrap();
        client.write_all(&masked(0x89, b"p")).await.unwrap();
        let mut back = [0u8; 10];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back[..7], b"\x81\x05hello");
        assert_eq!(&back[7..], b"\x8a\x01p");
    }
}
