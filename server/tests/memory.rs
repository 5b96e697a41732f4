//! Memory per idle connection, measured on the real binary: the resident set of the server
//! process before and after thousands of connections that said Hello and went quiet.

#![cfg(target_os = "linux")]

use breeze_testsupport::Peer;
use breeze_testsupport::process::{server_command, watch_log};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
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
    let mut child = server_command(
        BIN.as_ref(),
        &dir.path().join("mem.db"),
        ([127, 0, 0, 1], 0).into(),
    )
    .args(["--heartbeat-timeout", "10m", "--heartbeat-interval", "5m"])
    .args(["--handshake-timeout", "10m"])
    // One info line per session would be thousands here.
    .env("RUST_LOG", "warn,breeze_server=info")
    .spawn()
    .unwrap();
    // Held to the end: its thread keeps reading the server's stderr, so logging never blocks.
    let listening = watch_log(&mut child).expect("listening");
    let addr = listening.addr;
    // Warm up allocator arenas and the runtime with a first batch, then measure the rest.
    let mut conns = Vec::new();
    for _ in 0..100 {
        conns.push(Peer::hello(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(child.id());
    let started = Instant::now();
    for _ in 0..n {
        conns.push(Peer::hello(addr).await);
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
