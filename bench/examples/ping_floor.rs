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

use breeze_bench::mosquitto::mqtt::{Packet, next_packet};
use bytes::BytesMut;
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

/// The type (high nibble of the first byte) of each whole packet in `buf`, taken out of it;
/// `None` for a stream that is not MQTT (a bad length), which ends the connection. The
/// bench's own parser: a client's packets are all `Other` to it, which is all this needs.
fn take_kinds(buf: &mut BytesMut) -> Option<Vec<u8>> {
    let mut kinds = Vec::new();
    loop {
        match next_packet(buf) {
            Ok(Some(Packet::Other(kind))) => kinds.push(kind),
            // Broker-to-client packets: a client never sends them.
            Ok(Some(_)) => {}
            Ok(None) => return Some(kinds),
            Err(_) => return None,
        }
    }
}

/// Answers in place: one task, one read and one write per ping.
async fn connection(mut stream: TcpStream) {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Some(kinds) = take_kinds(&mut buf) else {
            return;
        };
        let mut out = Vec::new();
        for kind in kinds {
            if kind == DISCONNECT {
                return;
            }
            out.extend_from_slice(answer(kind).unwrap_or_default());
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
    let mut buf = BytesMut::with_capacity(256);
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
            read = rd.read_buf(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
                let Some(kinds) = take_kinds(&mut buf) else {
                    return;
                };
                for kind in kinds {
                    if kind == DISCONNECT || to_core.send((link.clone(), kind)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_packets_are_taken_whole_by_type_and_a_bad_length_ends_the_stream() {
        // CONNECT with a 3-byte body, PINGREQ, and the first byte of another PINGREQ.
        let mut buf = BytesMut::from(&[0x10, 0x03, 1, 2, 3, 0xC0, 0x00, 0xC0][..]);
        assert_eq!(take_kinds(&mut buf), Some(vec![CONNECT, PINGREQ]));
        assert_eq!(&buf[..], [0xC0], "the partial packet waits for its length");
        buf.extend_from_slice(&[0x00]);
        assert_eq!(take_kinds(&mut buf), Some(vec![PINGREQ]));
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&[0xC0, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert_eq!(take_kinds(&mut bad), None);
    }

    #[test]
    fn only_connect_and_pingreq_are_answered() {
        assert_eq!(answer(CONNECT), Some(&CONNACK[..]));
        assert_eq!(answer(PINGREQ), Some(&PINGRESP[..]));
        assert_eq!(answer(8), None, "SUBSCRIBE is not");
    }
}
