//! The least a tokio server does per idle ping: a yardstick for issue 15's idle goal, not a
//! broker. It answers MQTT CONNECT with CONNACK and PINGREQ with PINGRESP, and ignores
//! everything else, so `breeze-bench mosquitto-hold --contacts 0` can drive it in place of
//! Mosquitto (it takes Mosquitto's `-h` and `-c FILE`) and measure its CPU per idle ping
//! beside Breeze's and Mosquitto's in the same run (BENCHMARKS.md, "Idle heartbeats").
//!
//! ```sh
//! cargo build --release -p breeze-bench --example ping_floor
//! target/release/breeze-bench mosquitto-hold --contacts 0 \
//!     --mosquitto-bin target/release/examples/ping_floor
//! ```
//!
//! Two shapes, on tokio's multi-thread runtime with one worker (Breeze's default on 2 CPUs):
//! by default each connection's task answers in place (read, parse, write); with
//! `PING_FLOOR_HOP=1` every packet crosses to one central task over an `mpsc` channel and
//! its answer comes back through the connection's queue and a `Notify`, the two task hops a
//! Breeze `Ping` takes (connection task → core task → connection task), so the pair of
//! figures prices those hops apart from everything else Breeze does per frame.

use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
const PINGRESP: [u8; 2] = [0xD0, 0x00];
const CONNECT: u8 = 1;
const PINGREQ: u8 = 12;
const DISCONNECT: u8 = 14;

fn main() {
    if let Err(e) = run() {
        eprintln!("ping_floor: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // What `mosquitto -h` prints first, which mosquitto-hold reads as the version.
        Some("-h") => {
            println!("mosquitto version ping_floor");
            std::process::exit(1);
        }
        Some("-c") => {}
        _ => return Err("usage: ping_floor -c MOSQUITTO_CONF (or -h)".into()),
    }
    let path = args.get(2).ok_or("-c needs a configuration file")?;
    let conf = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut addr = None;
    let mut nodelay = false;
    for line in conf.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["listener", port, host] => addr = Some(format!("{host}:{port}")),
            ["set_tcp_nodelay", "true"] => nodelay = true,
            _ => {}
        }
    }
    let addr = addr.ok_or_else(|| format!("{path}: no `listener PORT HOST` line"))?;
    let hop = std::env::var_os("PING_FLOOR_HOP").is_some_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(serve(&addr, nodelay, hop))
}

async fn serve(addr: &str, nodelay: bool, hop: bool) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listen on {addr}: {e}"))?;
    let (to_core, inbox) = mpsc::channel(4096);
    if hop {
        tokio::spawn(core(inbox));
    }
    loop {
        // A failed accept (out of descriptors, say) leaves the listener usable.
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if nodelay {
            let _ = stream.set_nodelay(true);
        }
        if hop {
            tokio::spawn(connection_hop(stream, to_core.clone()));
        } else {
            tokio::spawn(connection(stream));
        }
    }
}

/// The answer to a packet of type `kind`, if it gets one.
fn answer(kind: u8) -> Option<&'static [u8]> {
    match kind {
        CONNECT => Some(&CONNACK),
        PINGREQ => Some(&PINGRESP),
        _ => None,
    }
}

/// The length of the whole packet at the front of `buf` (fixed header included), once all
/// of it has arrived.
fn whole_packet(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        len += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            let total = i + 1 + len;
            return (buf.len() >= total).then_some(total);
        }
    }
    None
}

/// Answers in place: one task, one read and one write per ping.
async fn connection(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        while let Some(len) = whole_packet(&buf) {
            let kind = buf[0] >> 4;
            if kind == DISCONNECT {
                return;
            }
            out.extend_from_slice(answer(kind).unwrap_or_default());
            buf.drain(..len);
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A connection's outbound bytes, filled by the core task and written by the connection's.
#[derive(Debug, Default)]
struct Link {
    queue: Mutex<Vec<u8>>,
    ready: Notify,
}

/// The central task of the `PING_FLOOR_HOP` shape: every packet comes here, every answer
/// goes back through its connection's `Link`.
async fn core(mut inbox: mpsc::Receiver<(Arc<Link>, u8)>) {
    let mut batch = Vec::new();
    while inbox.recv_many(&mut batch, 256).await > 0 {
        for (link, kind) in batch.drain(..) {
            if let Some(bytes) = answer(kind) {
                link.queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(bytes);
                link.ready.notify_one();
            }
        }
    }
}

/// Reads packets for the core task and writes what it queued back.
async fn connection_hop(stream: TcpStream, to_core: mpsc::Sender<(Arc<Link>, u8)>) {
    let link = Arc::new(Link::default());
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        tokio::select! {
            () = link.ready.notified() => {
                let out = std::mem::take(
                    &mut *link.queue.lock().unwrap_or_else(PoisonError::into_inner),
                );
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
            read = rd.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(len) = whole_packet(&buf) {
                    let kind = buf[0] >> 4;
                    if kind == DISCONNECT || to_core.send((link.clone(), kind)).await.is_err() {
                        return;
                    }
                    buf.drain(..len);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_whole_only_once_its_remaining_length_has_arrived() {
        assert_eq!(whole_packet(&[0xC0]), None, "no length byte yet");
        assert_eq!(whole_packet(&[0xC0, 0x00]), Some(2), "PINGREQ");
        assert_eq!(whole_packet(&[0x10, 0x03, 1, 2]), None, "one byte short");
        assert_eq!(whole_packet(&[0x10, 0x03, 1, 2, 3, 0xC0]), Some(5));
        // 200 = 0xC8 0x01 as two length bytes.
        let mut long = vec![0x30, 0xC8, 0x01];
        long.resize(3 + 199, 0);
        assert_eq!(whole_packet(&long), None);
        long.push(0);
        assert_eq!(whole_packet(&long), Some(203));
    }

    #[test]
    fn only_connect_and_pingreq_are_answered() {
        assert_eq!(answer(CONNECT), Some(&CONNACK[..]));
        assert_eq!(answer(PINGREQ), Some(&PINGRESP[..]));
        assert_eq!(answer(8), None, "SUBSCRIBE is not");
    }
}
