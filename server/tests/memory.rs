//! Memory per idle connection, measured on the real binary: the resident set of the server
//! process before and after thousands of connections that said Hello and went quiet.

#![cfg(target_os = "linux")]

use breeze_core::codec::{DEFAULT_MAX_FRAME, decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, MAGIC, PROTOCOL_VERSION, ServerMsg};
use bytes::BytesMut;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn idle_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let hello = ClientMsg::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: "mem".into(),
    };
    stream.write_all(&encode_frame(&hello)).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(payload) = split_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
            let msg: ServerMsg = decode(&payload).unwrap();
            assert!(matches!(msg, ServerMsg::Welcome { .. }));
            return stream;
        }
        assert!(stream.read_buf(&mut buf).await.unwrap() > 0);
    }
}

/// Run with `cargo test -p breeze-server --release --test memory -- --ignored --nocapture`
/// for numbers; `BREEZE_MEM_CONNS` sets how many connections (default 5000).
#[tokio::test]
#[ignore = "a measurement, not a check: takes seconds and thousands of sockets"]
async fn memory_per_idle_connection() {
    let n: usize = std::env::var("BREEZE_MEM_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--argon2-memory-kib", "8"])
        .args(["--argon2-iterations", "1", "--heartbeat-timeout", "10m"])
        .args(["--heartbeat-interval", "5m", "--handshake-timeout", "10m"])
        .arg("--db")
        .arg(dir.path().join("mem.db"))
        .env("RUST_LOG", "warn,breeze_server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    // Warm up allocator arenas and the runtime with a first batch, then measure the rest.
    let mut conns = Vec::new();
    for _ in 0..100 {
        conns.push(idle_connection(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(child.id());
    let started = Instant::now();
    for _ in 0..n {
        conns.push(idle_connection(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(child.id());
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!(
        "{n} idle connections in {:?}: RSS {before} KiB -> {after} KiB, {per_conn:.0} bytes each",
        started.elapsed()
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}
