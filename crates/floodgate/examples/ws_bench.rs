//! The WebSocket benchmark's origin and load (bench/websocket.sh), written here so the
//! load costs little next to the proxies it measures (a Python client would be the
//! bottleneck). Traffic goes only to the loopback address given.
//!
//!   ws_bench origin PORT             answers every handshake 101, then echoes the bytes
//!   ws_bench load ADDR CONNS SECS SIZE   CONNS tunnels, each sending one SIZE-byte binary
//!                                    message at a time and waiting for its echo; prints
//!                                    `messages per_second p50_us p99_us`
//!   ws_bench idle ADDR N             opens N tunnels, prints `ready N`, holds them until
//!                                    stdin closes
//!
//! The origin echoes the client's frames as they are (masked): both proxies carry opaque
//! bytes once the tunnel is open, so the measure is the tunnel's, not a WebSocket
//! library's. The proxies see a real handshake (`Upgrade: websocket`, a key, version 13).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or("missing argument (see the module doc)")
    };
    match arg(0)?.as_str() {
        "origin" => origin(arg(1)?.parse()?).await,
        "load" => {
            load(
                &arg(1)?,
                arg(2)?.parse()?,
                Duration::from_secs(arg(3)?.parse()?),
                arg(4)?.parse()?,
            )
            .await
        }
        "idle" => idle(&arg(1)?, arg(2)?.parse()?).await,
        other => Err(format!("unknown mode {other}").into()),
    }
}

/// Reads up to the end of a head; what came after it stays unread (nothing does here).
async fn read_head(s: &mut TcpStream) -> Result<Vec<u8>, Error> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            return Err("closed during the handshake".into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

async fn origin(port: u16) -> Result<(), Error> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            if read_head(&mut s).await.is_err() || s.write_all(SWITCH).await.is_err() {
                return;
            }
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// Opens a tunnel through the proxy at `addr`.
async fn tunnel(addr: &str) -> Result<TcpStream, Error> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(HANDSHAKE).await?;
    let head = read_head(&mut s).await?;
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!("no switch: {}", String::from_utf8_lossy(&head)).into());
    }
    Ok(s)
}

/// A masked binary frame with a `size`-byte payload (RFC 6455 §5.2).
fn frame(size: usize) -> Vec<u8> {
    let mut f = vec![0x82];
    match size {
        0..=125 => f.push(0x80 | size as u8),
        126..=65535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(size as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&mask);
    f.extend((0..size).map(|i| (i as u8) ^ mask[i % 4]));
    f
}

async fn load(addr: &str, conns: usize, secs: Duration, size: usize) -> Result<(), Error> {
    let message = frame(size);
    let until = Instant::now() + secs;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut s = tunnel(addr).await?;
        let message = message.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut back = vec![0u8; message.len()];
            while Instant::now() < until {
                let sent = Instant::now();
                if s.write_all(&message).await.is_err() || s.read_exact(&mut back).await.is_err() {
                    break;
                }
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{} {:.0} {} {}",
        all.len(),
        all.len() as f64 / secs.as_secs_f64(),
        pick(0.5),
        pick(0.99)
    );
    Ok(())
}

async fn idle(addr: &str, n: usize) -> Result<(), Error> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(tunnel(addr).await?);
    }
    println!("ready {}", held.len());
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await??;
    drop(held);
    Ok(())
}
