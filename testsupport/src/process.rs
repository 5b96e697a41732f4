//! The `breeze-server` binary as a child process: started with cheap hashing on a database
//! the test names, its address read from its "listening on" log line, every wait bounded,
//! and killed on drop so that a failing test leaves no server behind.
//!
//! The binary's path comes from the test (`env!("CARGO_BIN_EXE_breeze-server")` exists only
//! in the server package's own tests).

use crate::WAIT;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Attempts at binding a restarted server to the address the first one had; the port is
/// only briefly free, and something else could grab it in between.
const BIND_ATTEMPTS: u32 = 20;

/// `bin` listening on `listen` over the database `db` (its HTTP listener on a free loopback
/// port, so that tests never meet on 8080), with cheap password hashing on one thread, info
/// logs on a piped stderr, and none of the `BREEZE_*` variables of the test's environment (a
/// test sets those it means).
pub fn server_command(bin: &Path, db: &Path, listen: SocketAddr) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--db")
        .arg(db)
        .args(["--argon2-memory-kib", "8", "--argon2-iterations", "1"])
        .args(["--hash-threads", "1"])
        .args(["--http-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("BREEZE_HTTP_LISTEN")
        .env_remove("BREEZE_ALLOWED_ORIGINS")
        .env_remove("BREEZE_LISTEN")
        .env_remove("BREEZE_DB")
        .env_remove("BREEZE_STORE")
        .env_remove("BREEZE_CLUSTER")
        .env_remove("BREEZE_CLUSTER_NAME")
        .env_remove("BREEZE_NODE_ID")
        .env_remove("BREEZE_TLS_CERT")
        .env_remove("BREEZE_TLS_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A server child that logged where it listens.
#[derive(Debug)]
pub struct Listening {
    pub addr: SocketAddr,
    /// The "listening on" line itself (it also names the database, the scope, TLS).
    pub line: String,
    /// The lines logged after it, as they come.
    pub log: mpsc::Receiver<String>,
    /// The lines logged before it (migrations, warnings about the settings).
    pub earlier: Vec<String>,
}

impl Listening {
    /// Where the HTTP listener is, from the `web=http://ADDR/` field of the line.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        let rest = self.line.split("web=").nth(1)?;
        let url = rest.split_whitespace().next()?;
        let addr = url.split("://").nth(1)?.trim_end_matches('/');
        addr.parse().ok()
    }
}

/// The address in the server's "listening on ADDR …" log line; `None` for any other line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on ").nth(1)?;
    Some(
        rest.split_whitespace()
            .next()?
            .parse()
            .expect("an address after 'listening on'"),
    )
}

/// Collects the child's stderr lines on a thread and waits (bounded) for its "listening on"
/// line. If it exits first: what it logged, its exit status last.
pub fn watch_log(child: &mut Child) -> Result<Listening, Vec<String>> {
    let log = lines(child.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = listening_addr(&line) {
                    return Ok(Listening {
                        addr,
                        line,
                        log,
                        earlier: seen,
                    });
                }
                seen.push(line);
            }
            // stderr closed: the process is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                seen.push(format!("(exited: {status})"));
                return Err(seen);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no 'listening on' line within {WAIT:?}:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// The lines of `pipe` (a child's output), read on a thread as they come, so that the child
/// never blocks on a full pipe while the receiver lives.
pub fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for the child to exit; kills it and fails the test if it does not.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A database file in a fresh temporary directory.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("breeze.db");
    (dir, db)
}

/// A running server binary that a test can SIGKILL and start again on the same database and
/// address.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The HTTP listener (web client, probes), when it is on.
    pub http: Option<SocketAddr>,
    log: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts `bin` on `db`, listening on `listen` (port 0: a free one), with `extra` flags.
    /// Blocks until it listens: call it from `spawn_blocking` in async code.
    pub fn spawn(bin: &Path, db: &Path, listen: SocketAddr, extra: &[&str]) -> ServerProcess {
        let mut last_log = Vec::new();
        for _ in 0..BIND_ATTEMPTS {
            let mut child = server_command(bin, db, listen)
                .args(extra)
                .spawn()
                .expect("spawn breeze-server");
            match watch_log(&mut child) {
                Ok(listening) => {
                    return ServerProcess {
                        child,
                        addr: listening.addr,
                        http: listening.http_addr(),
                        log: listening.log,
                    };
                }
                Err(log) if log.iter().any(|l| l.contains("cannot listen on")) => {
                    last_log = log;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!("the server did not start:\n{}", log.join("\n")),
            }
        }
        panic!(
            "the server could not bind {listen} in {BIND_ATTEMPTS} attempts:\n{}",
            last_log.join("\n")
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush, no goodbye. Returns once the process is gone.
    pub fn sigkill(mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap()
    }

    /// SIGTERM: the server's clean stop. Returns once the process is gone (bounded).
    pub fn sigterm(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        wait_exit(&mut self.child)
    }

    /// What the server logged since it started listening (for failure messages).
    pub fn log_so_far(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
