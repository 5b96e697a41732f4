//! `mosquitto-hold`: `hold`'s idle figures for Mosquitto, measured by this bench in the same
//! run and with the same client pacing, so that issue 15's goal (server CPU of 19,900 idle
//! clients over 20 s no more than Mosquitto's) compares like with like instead of with figures
//! from another harness.
//!
//! What `hold` does in Breeze terms, and what this mirrors in MQTT 3.1.1 terms:
//!
//! - a login (`Hello` + `Login` with status `Online`, in one write, until `LoginOk`) is
//!   CONNECT (clean session, keepalive = the heartbeat interval in whole seconds, a retained
//!   will "offline" on the client's own topic `presence/{name}`), SUBSCRIBE (QoS 0) to the
//!   topics of its ring contacts (`Population::contacts_of`, the users `hold` makes it
//!   watch) and PUBLISH of a retained "online" on its own topic, in one write, until CONNACK
//!   and SUBACK; at most `--inflight` such logins at a time, as `hold`;
//! - the presence snapshot and diffs are the retained and live "online" messages: a client's
//!   view is complete once it has seen every contact online (`seconds_to_all_presence`);
//! - a heartbeat `Ping`/`Pong` is PINGREQ/PINGRESP, on `hold`'s clock
//!   (`presence::Heartbeat`, seeded per client as `hold` seeds it): one per interval, the
//!   first at a random phase after the login.
//!
//! Not mirrored: registration and contact lists (the broker has no users), the reconnect
//! storm (`hold --no-restart` is the comparison), resume tokens. With `--contacts 0` the
//! clients only connect and ping.

use crate::net::{connect_tcp, fill, source_ip};
use crate::pop::{Errors, Population, Scope};
use crate::presence::{Heartbeat, client_rng};
use crate::procfs::{self, Sample};
use crate::report::{Report, round};
use crate::scenarios::{
    IdleWindow, Storm, bar, cap_clients, heartbeat_fields, loadavg, timed, wait_for,
};
use crate::stats::Summary;
use bytes::BytesMut;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long one login (connect to SUBACK) may take before it counts as failed, as in `hold`.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long Mosquitto has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopped clients have to end before they are aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Log lines of Mosquitto's kept for the report (the newest); all are counted.
const LOG_LINES_KEPT: usize = 20;

#[derive(Debug, Clone, clap::Args)]
pub struct MosquittoHoldArgs {
    #[arg(long, default_value_t = 19_900)]
    pub clients: usize,
    /// Contacts per client on `hold`'s ring: client i subscribes to the presence topics of
    /// i+1 … i+contacts (0: no presence, only connects and pings).
    #[arg(long, default_value_t = 20)]
    pub contacts: usize,
    /// The idle window, with heartbeats only, over which the broker's CPU is measured.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// How long everyone idles after the login storm before the window opens, as `hold`'s.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Every client's PINGREQ interval; its MQTT keepalive is this in whole seconds (rounded
    /// up, at least 1), so the broker drops a client silent for 1.5 times that.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// The Mosquitto binary to start.
    #[arg(long, default_value = "/usr/sbin/mosquitto", value_name = "PATH")]
    pub mosquitto_bin: PathBuf,
    /// Leave out `set_tcp_nodelay true` (Mosquitto's default: Nagle on its sockets).
    #[arg(long)]
    pub no_nodelay: bool,
    /// Logins in flight at most during the login storm (connect to SUBACK), as `hold`'s.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub inflight: usize,
    /// Longest any one phase may take before the scenario gives up on it and reports what
    /// it has.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub phase_timeout: Duration,
    /// Client ids and topics use `{prefix}{i}` as names, as `hold`'s users.
    #[arg(long, default_value = "u")]
    pub prefix: String,
}

/// The MQTT 3.1.1 packets the clients write and read, by hand: the bench needs six kinds of
/// packet and no client library's own scheduling between it and the broker.
/// `examples/ping_floor.rs` reads clients' packets with it too.
pub mod mqtt {
    use bytes::{Buf, BytesMut};

    /// Packets larger than this are taken for a broken stream (ours are tens of bytes).
    pub const MAX_PACKET: usize = 1 << 20;

    pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
    pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

    /// What the broker sends a client.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Packet {
        ConnAck {
            return_code: u8,
        },
        SubAck {
            packet_id: u16,
            codes: Vec<u8>,
        },
        Publish {
            topic: String,
            payload: Vec<u8>,
        },
        PingResp,
        /// Any other packet type (the high nibble of its first byte).
        Other(u8),
    }

    fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    fn packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
        out.push(first);
        remaining_length(out, body.len());
        out.extend_from_slice(body);
    }

    /// A retained QoS 0 message left by the broker on `topic` if the client goes without a
    /// DISCONNECT.
    #[derive(Debug)]
    pub struct Will<'a> {
        pub topic: &'a str,
        pub payload: &'a [u8],
    }

    /// CONNECT, protocol level 4 (3.1.1), clean session.
    pub fn connect(out: &mut Vec<u8>, client_id: &str, keepalive_s: u16, will: Option<Will>) {
        let mut body = Vec::with_capacity(64);
        string(&mut body, b"MQTT");
        body.push(4);
        // Clean session; with a will: will flag and will retain, will QoS 0.
        body.push(if will.is_some() {
            0x02 | 0x04 | 0x20
        } else {
            0x02
        });
        body.extend_from_slice(&keepalive_s.to_be_bytes());
        string(&mut body, client_id.as_bytes());
        if let Some(w) = will {
            string(&mut body, w.topic.as_bytes());
            string(&mut body, w.payload);
        }
        packet(out, 0x10, &body);
    }

    /// SUBSCRIBE to each of `topics` at QoS 0, in one packet.
    pub fn subscribe(out: &mut Vec<u8>, packet_id: u16, topics: &[String]) {
        let mut body = packet_id.to_be_bytes().to_vec();
        for t in topics {
            string(&mut body, t.as_bytes());
            body.push(0);
        }
        packet(out, 0x82, &body);
    }

    /// PUBLISH at QoS 0, retained.
    pub fn publish_retained(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
        let mut body = Vec::with_capacity(topic.len() + payload.len() + 2);
        string(&mut body, topic.as_bytes());
        body.extend_from_slice(payload);
        packet(out, 0x31, &body);
    }

    /// Takes the next whole packet out of `buf`, if there is one.
    pub fn next_packet(buf: &mut BytesMut) -> Result<Option<Packet>, String> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let (mut len, mut shift, mut at) = (0usize, 0u32, 1usize);
        loop {
            let Some(&b) = buf.get(at) else {
                return Ok(None);
            };
            len |= usize::from(b & 0x7F) << shift;
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return Err("bad remaining length".into());
            }
        }
        if len > MAX_PACKET {
            return Err(format!("a {len}-byte packet"));
        }
        if buf.len() < at + len {
            return Ok(None);
        }
        buf.advance(at);
        let body = buf.split_to(len);
        let short = || format!("short packet 0x{first:02X}");
        Ok(Some(match first >> 4 {
            2 => Packet::ConnAck {
                return_code: *body.get(1).ok_or_else(short)?,
            },
            9 => {
                if body.len() < 2 {
                    return Err(short());
                }
                Packet::SubAck {
                    packet_id: u16::from_be_bytes([body[0], body[1]]),
                    codes: body[2..].to_vec(),
                }
            }
            3 => {
                if body.len() < 2 {
                    return Err(short());
                }
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                // QoS 1 or 2 (flag bits 1-2) puts a packet id after the topic.
                let id = if first & 0x06 != 0 { 2 } else { 0 };
                if body.len() < 2 + tlen + id {
                    return Err(short());
                }
                Packet::Publish {
                    topic: String::from_utf8_lossy(&body[2..2 + tlen]).into_owned(),
                    payload: body[2 + tlen + id..].to_vec(),
                }
            }
            13 => Packet::PingResp,
            t => Packet::Other(t),
        }))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn connect_with_a_will_is_laid_out_as_the_spec_says() {
            let mut out = Vec::new();
            let will = Will {
                topic: "p/u1",
                payload: b"off",
            };
            connect(&mut out, "u1", 30, Some(will));
            let mut want = vec![0x10, 25, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x26, 0, 30];
            want.extend_from_slice(&[0, 2, b'u', b'1', 0, 4, b'p', b'/', b'u', b'1']);
            want.extend_from_slice(&[0, 3, b'o', b'f', b'f']);
            assert_eq!(out, want);
        }

        #[test]
        fn long_packets_get_a_two_byte_length() {
            let mut out = Vec::new();
            let topics: Vec<String> = (0..20).map(|i| format!("presence/u{i:05}")).collect();
            subscribe(&mut out, 7, &topics);
            // 2 (id) + 20 × (2 + 15 + 1) = 362 = 0x6A + 2 × 128.
            assert_eq!(&out[..5], &[0x82, 0xEA, 0x02, 0, 7]);
            assert_eq!(out.len(), 3 + 362);
            let mut small = Vec::new();
            publish_retained(&mut small, "t", b"online");
            assert_eq!(small, b"\x31\x09\x00\x01tonline");
        }

        #[test]
        fn packets_come_out_whole_and_in_order() {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&[0x20, 0x02, 0x00, 0x00, 0x90, 0x04, 0x00, 0x01, 0x00]);
            assert_eq!(
                next_packet(&mut buf).unwrap(),
                Some(Packet::ConnAck { return_code: 0 })
            );
            // A SUBACK still missing a byte waits for it.
            assert_eq!(next_packet(&mut buf).unwrap(), None);
            buf.extend_from_slice(&[0x80]);
            assert_eq!(
                next_packet(&mut buf).unwrap(),
                Some(Packet::SubAck {
                    packet_id: 1,
                    codes: vec![0x00, 0x80]
                })
            );
            let mut publish = Vec::new();
            publish_retained(&mut publish, "presence/u3", b"online");
            buf.extend_from_slice(&publish);
            buf.extend_from_slice(&[0xD0, 0x00]);
            assert_eq!(
                next_packet(&mut buf).unwrap(),
                Some(Packet::Publish {
                    topic: "presence/u3".into(),
                    payload: b"online".to_vec()
                })
            );
            assert_eq!(next_packet(&mut buf).unwrap(), Some(Packet::PingResp));
            assert!(buf.is_empty());
            buf.extend_from_slice(&[0x90, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
            assert!(next_packet(&mut buf).is_err());
        }
    }
}

/// Mosquitto's configuration for a run: one loopback listener, anyone may connect, no limit
/// on connections, nothing on disk, and only warnings and errors logged (to stderr, which the
/// bench reads): a notice per connection would be work the Breeze server, logging at `warn`,
/// does not do.
pub fn config(port: u16, nodelay: bool) -> String {
    format!(
        "# written by breeze-bench mosquitto-hold\n\
         listener {port} 127.0.0.1\n\
         max_connections -1\n\
         allow_anonymous true\n\
         {}persistence false\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n",
        if nodelay {
            "set_tcp_nodelay true\n"
        } else {
            ""
        }
    )
}

/// What Mosquitto wrote to stderr: every line counted, the newest kept.
#[derive(Debug, Default)]
struct Log {
    count: usize,
    last: Vec<String>,
}

/// A Mosquitto child on a free loopback port, killed when dropped.
#[derive(Debug)]
struct Broker {
    child: Child,
    addr: SocketAddr,
    version: String,
    log: Arc<Mutex<Log>>,
    /// The configuration file's directory, removed with the broker.
    _dir: tempfile::TempDir,
}

/// The version line of `mosquitto -h` (it prints its usage and exits non-zero).
fn version(bin: &Path) -> Result<String, String> {
    let out = Command::new(bin)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("--mosquitto-bin {}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("mosquitto version "))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| {
            format!(
                "--mosquitto-bin {}: `-h` printed no `mosquitto version` line; is it Mosquitto?",
                bin.display()
            )
        })
}

impl Broker {
    fn start(bin: &Path, nodelay: bool) -> Result<Broker, String> {
        if !bin.exists() {
            return Err(format!(
                "--mosquitto-bin {}: no such file (install Mosquitto, or pass its path)",
                bin.display()
            ));
        }
        let version = version(bin)?;
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        // A port the kernel just gave out, handed to Mosquitto: another process could take
        // it in between, which the start then reports.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config(port, nodelay))
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("--mosquitto-bin {}: {e}", bin.display()))?;
        let log = Arc::new(Mutex::new(Log::default()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            // Ends when Mosquitto closes its stderr, i.e. when it exits.
            let _ = std::thread::Builder::new()
                .name("mosquitto-log".into())
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                        log.count += 1;
                        if log.last.len() == LOG_LINES_KEPT {
                            log.last.remove(0);
                        }
                        log.last.push(line);
                    }
                });
        }
        let mut broker = Broker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            version,
            log,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&broker.addr, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                // Let the log thread read what it printed.
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "mosquitto exited ({status}) before listening on {}: {}",
                    broker.addr,
                    broker.log_lines().join(" | ")
                ));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "mosquitto did not listen on {} within {START_TIMEOUT:?}: {}",
                    broker.addr,
                    broker.log_lines().join(" | ")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sample(&self) -> Option<Sample> {
        Sample::take(Some(self.pid()))
    }

    fn log_lines(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .clone()
    }

    /// Kills the broker. Returns how it had ended if it was gone already (an error of the
    /// run), and its log lines: (count, newest).
    fn finish(mut self) -> (Option<String>, usize, Vec<String>) {
        let early = match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("mosquitto exited during the run ({status})")),
            _ => None,
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        (early, log.count, log.last.clone())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The MQTT keepalive for a heartbeat interval: whole seconds, rounded up, at least 1.
pub fn keepalive_s(interval: Duration) -> Result<u16, String> {
    let s = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
    u16::try_from(s.max(1)).map_err(|_| {
        format!(
            "--heartbeat-interval {interval:?}: MQTT's keepalive is at most 65535 s (18 h 12 min)"
        )
    })
}

fn topic(pop: &Population, i: usize) -> String {
    format!("presence/{}", pop.name(i))
}

/// What every client shares with the orchestrator.
#[derive(Debug)]
struct Shared {
    pop: Population,
    addr: SocketAddr,
    keepalive_s: u16,
    interval: Duration,
    /// Bounds logins in flight: taken before connecting, given back at SUBACK.
    slots: Semaphore,
    logged_in: AtomicUsize,
    /// Clients that have seen every contact online.
    complete: AtomicUsize,
    /// PINGREQs written.
    pings: AtomicUsize,
    /// PINGRESPs read.
    pingresps: AtomicUsize,
    errors: Errors,
    /// Connect to SUBACK, per login, in microseconds.
    login_us: Mutex<Vec<u64>>,
}

/// A client's picture of its contacts: which it has seen online last.
#[derive(Debug)]
struct View {
    online: Vec<bool>,
    count: usize,
    complete: bool,
}

impl View {
    fn new(k: usize) -> View {
        View {
            online: vec![false; k],
            count: 0,
            complete: false,
        }
    }

    /// A presence message on `topic` reached client `i`.
    fn apply(
        &mut self,
        pop: &Population,
        i: usize,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), String> {
        let u = topic
            .strip_prefix("presence/")
            .and_then(|name| pop.index_of(name))
            .ok_or_else(|| format!("a message on a topic not subscribed: {topic}"))?;
        let d = (u + pop.n - i) % pop.n;
        if d == 0 || d > self.online.len() {
            return Err(format!("a message on a topic not subscribed: {topic}"));
        }
        let now = match payload {
            b"online" => true,
            b"offline" => false,
            _ => return Err(format!("an unknown payload on {topic}")),
        };
        let before = std::mem::replace(&mut self.online[d - 1], now);
        match (before, now) {
            (false, true) => self.count += 1,
            (true, false) => self.count -= 1,
            _ => {}
        }
        Ok(())
    }

    /// True the first time every contact is online.
    fn just_completed(&mut self) -> bool {
        if !self.complete && self.count == self.online.len() {
            self.complete = true;
            return true;
        }
        false
    }
}

/// What the client reads, until it needs more bytes. `acked` gathers CONNACK and SUBACK.
fn read_packets(
    shared: &Shared,
    i: usize,
    buf: &mut BytesMut,
    view: &mut View,
    acked: &mut (bool, bool),
) -> Result<(), String> {
    while let Some(p) = mqtt::next_packet(buf)? {
        match p {
            mqtt::Packet::ConnAck { return_code: 0 } => acked.0 = true,
            mqtt::Packet::ConnAck { return_code } => {
                return Err(format!(
                    "CONNACK refused the connection: code {return_code}"
                ));
            }
            mqtt::Packet::SubAck { codes, .. } => {
                if codes.iter().any(|&c| c > 2) {
                    return Err(format!("SUBACK refused a subscription: {codes:?}"));
                }
                acked.1 = true;
            }
            mqtt::Packet::Publish { topic, payload } => {
                if let Err(e) = view.apply(&shared.pop, i, &topic, &payload) {
                    shared.errors.add(format!("client {i}: {e}"));
                }
                if view.just_completed() {
                    shared.complete.fetch_add(1, Ordering::Relaxed);
                }
            }
            mqtt::Packet::PingResp => {
                shared.pingresps.fetch_add(1, Ordering::Relaxed);
            }
            mqtt::Packet::Other(t) => return Err(format!("an unexpected packet of type {t}")),
        }
    }
    Ok(())
}

/// Connects, writes CONNECT, SUBSCRIBE and the retained "online" in one write (MQTT lets a
/// client send before its CONNACK), and reads until CONNACK and SUBACK.
async fn login(
    shared: &Shared,
    i: usize,
) -> Result<(tokio::net::TcpStream, BytesMut, View), String> {
    let pop = &shared.pop;
    let mut stream = connect_tcp(shared.addr, source_ip(i, pop.n))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let contacts = pop.contacts_of(i);
    let own = topic(pop, i);
    let mut out = Vec::with_capacity(64 + contacts.len() * 20);
    let will = (!contacts.is_empty()).then_some(mqtt::Will {
        topic: &own,
        payload: b"offline",
    });
    mqtt::connect(&mut out, &pop.name(i), shared.keepalive_s, will);
    if !contacts.is_empty() {
        let topics: Vec<String> = contacts.iter().map(|&c| topic(pop, c)).collect();
        mqtt::subscribe(&mut out, 1, &topics);
        mqtt::publish_retained(&mut out, &own, b"online");
    }
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut view = View::new(contacts.len());
    let mut acked = (false, contacts.is_empty());
    loop {
        read_packets(shared, i, &mut buf, &mut view, &mut acked)?;
        if acked.0 && acked.1 {
            return Ok((stream, buf, view));
        }
        fill(&mut stream, &mut buf)
            .await
            .map_err(|e| format!("login read: {e}"))?;
    }
}

/// One client: log in (bounded by the shared slots), then ping on `hold`'s clock and read
/// until told to stop, when it says DISCONNECT (no will: nobody is told it left).
async fn client(i: usize, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut rng = client_rng(i);
    let attempt = async {
        let _slot = shared
            .slots
            .acquire()
            .await
            .map_err(|_| "the login slots closed".to_owned())?;
        let started = Instant::now();
        let s = tokio::time::timeout(LOGIN_TIMEOUT, login(&shared, i))
            .await
            .unwrap_or_else(|_| Err(format!("login timed out after {LOGIN_TIMEOUT:?}")))?;
        Ok::<_, String>((s, started.elapsed()))
    };
    let ((mut stream, mut buf, mut view), took) = tokio::select! {
        r = attempt => match r {
            Ok(s) => s,
            Err(e) => {
                shared.errors.add(format!("client {i}: {e}"));
                return;
            }
        },
        _ = stop.changed() => return,
    };
    shared
        .login_us
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(took.as_micros() as u64);
    shared.logged_in.fetch_add(1, Ordering::Relaxed);
    // Without contacts there is nothing to wait for.
    if view.just_completed() {
        shared.complete.fetch_add(1, Ordering::Relaxed);
    }
    let mut heartbeat = Heartbeat::start(shared.interval, &mut rng);
    let (mut r, mut w) = stream.split();
    let mut acked = (true, true);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                let _ = w.write_all(&mqtt::DISCONNECT).await;
                return;
            }
            read = fill(&mut r, &mut buf) => {
                let read = read
                    .map_err(|e| format!("read: {e}"))
                    .and_then(|()| read_packets(&shared, i, &mut buf, &mut view, &mut acked));
                if let Err(e) = read {
                    shared.errors.add(format!("client {i}: {e}"));
                    return;
                }
            }
            () = tokio::time::sleep_until(heartbeat.due()) => {
                if let Err(e) = w.write_all(&mqtt::PINGREQ).await {
                    shared.errors.add(format!("client {i}: ping: {e}"));
                    return;
                }
                shared.pings.fetch_add(1, Ordering::Relaxed);
                heartbeat.sent();
            }
        }
    }
}

/// Spawns every client at once (each waits for a login slot) and waits for the last SUBACK,
/// then for every view to be complete, each within what is left of `timeout`.
async fn storm(
    shared: &Arc<Shared>,
    broker: &Broker,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
    timeout: Duration,
) -> Storm {
    let n = shared.pop.n;
    let server0 = broker.sample();
    let bench0 = Sample::take(None);
    let overflows0 = procfs::listen_overflows();
    let t0 = Instant::now();
    for i in 0..n {
        tasks.spawn(client(i, shared.clone(), stop.clone()));
    }
    let pb = bar(n as u64, "logins");
    let s = shared.clone();
    let logged = wait_for(|| s.logged_in.load(Ordering::Relaxed), n, timeout, &pb).await;
    let login_s = t0.elapsed().as_secs_f64();
    let cpu = match (server0, broker.sample(), bench0, Sample::take(None)) {
        (Some(s0), Some(s1), Some(b0), Some(b1)) => {
            Some((s1.cpu_s - s0.cpu_s, b1.cpu_s - b0.cpu_s))
        }
        _ => None,
    };
    pb.set_message("presence");
    let left = timeout.saturating_sub(t0.elapsed());
    let complete = wait_for(|| s.complete.load(Ordering::Relaxed), n, left, &pb).await;
    let presence_s = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let mut login_us = std::mem::take(
        &mut *shared
            .login_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    Storm {
        logins: shared.logged_in.load(Ordering::Relaxed),
        login_s: logged.then_some(login_s),
        presence_s: complete.then_some(presence_s),
        complete: shared.complete.load(Ordering::Relaxed),
        latency: Summary::of(&mut login_us),
        samples: login_us,
        cpu,
        listen_overflows: procfs::listen_overflows()
            .zip(overflows0)
            .map(|(b, a)| b.saturating_sub(a)),
    }
}

pub async fn mosquitto_hold(a: MosquittoHoldArgs, fd_limit: u64) -> Result<Report, String> {
    let keepalive = keepalive_s(a.heartbeat_interval)?;
    let n = cap_clients(a.clients, fd_limit);
    let pop = Population {
        n,
        prefix: a.prefix.clone(),
        scope: Scope::Contacts,
        contacts: a.contacts,
    };
    let view_size = pop.view_size();
    let broker = tokio::task::block_in_place(|| Broker::start(&a.mosquitto_bin, !a.no_nodelay))?;
    let mut r = Report::new("mosquitto-hold");
    r.field("loadavg_at_start", loadavg())
        .field("server", "mosquitto")
        .both(
            "mosquitto",
            format!(
                "{} ({}), {}",
                a.mosquitto_bin.display(),
                broker.version,
                if a.no_nodelay {
                    "Nagle on (no set_tcp_nodelay)"
                } else {
                    "set_tcp_nodelay true"
                }
            ),
            "mosquitto_version",
            broker.version.clone(),
        )
        .field("tcp_nodelay", !a.no_nodelay)
        .field("transport", "tcp")
        .field("nodes", 1)
        .both(
            "clients",
            format!("{n} (asked {})", a.clients),
            "clients",
            n,
        )
        .field("clients_asked", a.clients)
        .both(
            "scope",
            format!("contacts ({view_size} each: subscriptions to their presence topics)"),
            "scope",
            "contacts",
        )
        .field("contacts", a.contacts);
    // The broker drops a client silent for one and a half keepalives.
    heartbeat_fields(
        &mut r,
        a.heartbeat_interval,
        Duration::from_millis(u64::from(keepalive) * 1500),
    )
    .field("keepalive_s", keepalive)
    .field("inflight", a.inflight);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = broker.sample();
    let bench0 = Sample::take(None);
    let shared = Arc::new(Shared {
        pop,
        addr: broker.addr,
        keepalive_s: keepalive,
        interval: a.heartbeat_interval,
        slots: Semaphore::new(a.inflight.max(1)),
        logged_in: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        pings: AtomicUsize::new(0),
        pingresps: AtomicUsize::new(0),
        errors: Errors::default(),
        login_us: Mutex::new(Vec::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let first = storm(&shared, &broker, &mut tasks, &stop_rx, a.phase_timeout).await;
    first.report(&mut r, "login storm", "login_storm", n);
    let after_storm = broker.sample();

    // Idle: only heartbeats. Let the storm's last work settle first, as `hold` does.
    timed(a.settle, "settling").await;
    let idle0 = broker.sample();
    let bench_idle0 = Sample::take(None);
    let pings0 = shared.pings.load(Ordering::Relaxed);
    let pongs0 = shared.pingresps.load(Ordering::Relaxed);
    timed(a.idle, "idle window").await;
    let idle1 = broker.sample();
    let bench_idle1 = Sample::take(None);
    let pings = shared.pings.load(Ordering::Relaxed) - pings0;
    let pongs = shared.pingresps.load(Ordering::Relaxed) - pongs0;
    let online = shared.logged_in.load(Ordering::Relaxed).max(1);
    IdleWindow {
        base,
        after_storm,
        server: (idle0, idle1),
        bench: (bench_idle0, bench_idle1),
        online,
        pings,
        idle: a.idle,
        settle: a.settle,
    }
    .report(
        &mut r,
        "connects",
        &format!(", {pongs} PINGRESPs read"),
        "cannot read /proc of mosquitto",
    );
    r.field("idle_pingresps", pongs);
    if let (Some(b0), Some(b1)) = (bench0, Sample::take(None)) {
        r.both(
            "bench CPU, whole run",
            format!("{:.2} s", b1.cpu_s - b0.cpu_s),
            "bench_cpu_s",
            round(b1.cpu_s - b0.cpu_s, 3),
        );
    }
    // Clients first, each with a DISCONNECT, so the broker is not busy with wills when it
    // is killed; then the broker.
    let _ = stop_tx.send(true);
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_TIMEOUT, all).await.is_err() {
        tasks.abort_all();
    }
    let total_pings = shared.pings.load(Ordering::Relaxed);
    let total_pongs = shared.pingresps.load(Ordering::Relaxed);
    r.both(
        "PINGREQ written / PINGRESP read, whole run",
        format!("{total_pings} / {total_pongs}"),
        "pings",
        total_pings,
    )
    .field("pingresps", total_pongs);
    let (early, log_count, log_last) = broker.finish();
    if let Some(e) = early {
        shared.errors.add(e);
    }
    let errors = shared.errors.count();
    r.both("client errors", errors.to_string(), "errors", errors);
    if let Some(e) = shared.errors.last() {
        r.both("last client error", e.clone(), "last_error", e);
    }
    r.both(
        "server warnings logged",
        log_count.to_string(),
        "server_warnings",
        log_count,
    );
    if let Some(w) = log_last.last() {
        r.field("last_server_warning", w.clone());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_is_whole_seconds_rounded_up() {
        assert_eq!(keepalive_s(Duration::from_secs(30)), Ok(30));
        assert_eq!(keepalive_s(Duration::from_millis(1500)), Ok(2));
        assert_eq!(keepalive_s(Duration::from_millis(100)), Ok(1));
        assert!(keepalive_s(Duration::from_secs(70_000)).is_err());
    }

    #[test]
    fn the_config_has_nodelay_only_when_asked() {
        let c = config(1883, true);
        assert!(c.contains("listener 1883 127.0.0.1\n"));
        assert!(c.contains("set_tcp_nodelay true\n"));
        assert!(c.contains("max_connections -1\n"));
        assert!(c.contains("persistence false\n"));
        assert!(!c.contains("log_dest file"));
        assert!(!config(1883, false).contains("nodelay"));
    }

    #[test]
    fn a_view_completes_once_every_contact_is_online() {
        let pop = Population {
            n: 10,
            prefix: "u".into(),
            scope: Scope::Contacts,
            contacts: 3,
        };
        // Client 8 watches 9, 0 and 1.
        let mut v = View::new(3);
        v.apply(&pop, 8, "presence/u9", b"online").unwrap();
        v.apply(&pop, 8, "presence/u0", b"online").unwrap();
        assert!(!v.just_completed());
        v.apply(&pop, 8, "presence/u0", b"online").unwrap();
        assert!(!v.just_completed());
        v.apply(&pop, 8, "presence/u1", b"online").unwrap();
        assert!(v.just_completed());
        assert!(!v.just_completed());
        v.apply(&pop, 8, "presence/u1", b"offline").unwrap();
        assert_eq!(v.count, 2);
        assert!(v.apply(&pop, 8, "presence/u2", b"online").is_err());
        assert!(v.apply(&pop, 8, "presence/u8", b"online").is_err());
        assert!(v.apply(&pop, 8, "elsewhere/u9", b"online").is_err());
        assert!(v.apply(&pop, 8, "presence/u9", b"away").is_err());
        assert!(View::new(0).just_completed());
    }
}
