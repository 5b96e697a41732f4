//! The `breeze-server` binary as a child process that a test can SIGKILL and restart on the
//! same database and address. Killed on drop, so a failing test leaves no server behind.

use super::WAIT;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");

/// Attempts at binding a restarted server to the address the first one had; the port is
/// only briefly free, and something else could grab it in between.
const BIND_ATTEMPTS: u32 = 20;

#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts the binary on `db`, listening on `listen` (port 0: a free one; the real address
    /// is read from its "listening on" log line), with cheap password hashing and `extra`
    /// flags. Blocks until it listens: call it from `spawn_blocking` in async code.
    pub fn spawn(db: &Path, listen: SocketAddr, extra: &[&str]) -> ServerProcess {
        let mut last_log = Vec::new();
        for _ in 0..BIND_ATTEMPTS {
            match ServerProcess::try_spawn(db, listen, extra) {
                Ok(server) => return server,
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

    /// The server, or its log if it exited before listening.
    fn try_spawn(
        db: &Path,
        listen: SocketAddr,
        extra: &[&str],
    ) -> Result<ServerProcess, Vec<String>> {
        let mut child = Command::new(BIN)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--db")
            .arg(db)
            .args(["--argon2-memory-kib", "8", "--argon2-iterations", "1"])
            .args(["--hash-threads", "1"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("BREEZE_LISTEN")
            .env_remove("BREEZE_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn breeze-server");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                        return Ok(ServerProcess { child, addr, log });
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush, no goodbye. Returns once the process is gone.
    pub fn sigkill(mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap()
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

/// A database file in a fresh temporary directory.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("breeze.db");
    (dir, db)
}
