//! The server under test: a `breeze-server` process this bench starts (fresh temporary
//! database, release build), or one somebody else started (`--addr`).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start our own server: the binary and the flags that stay the same across restarts.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub bin: PathBuf,
    /// Flags other than `--listen` and `--db`.
    pub args: Vec<String>,
}

/// Finds `breeze-server` next to this executable (`target/release/`), unless given.
pub fn find_server_bin(given: Option<PathBuf>) -> io::Result<PathBuf> {
    if let Some(bin) = given {
        return Ok(bin);
    }
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("breeze-server");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no breeze-server next to {}: build it with \
                 `cargo build --release -p breeze-server -p breeze-bench`, or pass --server-bin",
                exe.display()
            ),
        ))
    }
}

/// A running `breeze-server` child.
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    pub addr: SocketAddr,
    /// Its HTTP listener (WebSocket at `/ws`), from the `web=` field of the line.
    pub http_addr: Option<SocketAddr>,
    pub log: PathBuf,
}

/// What the server prints (at info level, from the `breeze_server` target) once it listens.
const LISTENING: &str = "breeze-server listening on ";

/// The HTTP listener's address in the startup line (`web=http://ADDR/`), if it has one.
pub fn parse_web(log: &str) -> Option<SocketAddr> {
    let line = &log[log.find(LISTENING)?..];
    let line = line.lines().next()?;
    let url = line.split("web=").nth(1)?.split_whitespace().next()?;
    url.split("://").nth(1)?.trim_end_matches('/').parse().ok()
}

/// The address in the server's startup log line, if `log` has it yet.
pub fn parse_listening(log: &str) -> Option<SocketAddr> {
    let at = log.find(LISTENING)? + LISTENING.len();
    let rest = &log[at..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl ServerProc {
    /// Starts the server on a free loopback port with its database at `db`, logging to
    /// `log`, and waits (up to 30 s) until it listens.
    ///
    /// The server logs at `warn`, except its one startup line: per-session `info` lines would
    /// cost it a formatted write per login, which a deployment of this size turns off too.
    pub fn start(spawn: &Spawn, db: &Path, log: &Path) -> io::Result<ServerProc> {
        let out = File::create(log)?;
        let child = Command::new(&spawn.bin)
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(&spawn.args)
            .env("RUST_LOG", "warn,breeze_server=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", spawn.bin.display())))?;
        let mut server = ServerProc {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: None,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(addr) = parse_listening(&text) {
                server.addr = addr;
                server.http_addr = parse_web(&text);
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "breeze-server exited ({status}) before listening:\n{text}"
                )));
            }
            if Instant::now() > deadline {
                let _ = server.child.kill();
                return Err(io::Error::other("breeze-server did not listen within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a graceful shutdown: every session is told `Bye{ServerShutdown}`), then waits
    /// up to 20 s for the exit before killing it.
    pub fn stop(mut self) -> io::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill()?;
        self.child.wait()?;
        Err(io::Error::other(
            "breeze-server ignored SIGTERM for 20 s; killed",
        ))
    }

    /// SIGKILL: no shutdown, no goodbye to anyone. Returns once the process is gone.
    pub fn kill(mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// Warning and error lines the server logged, for the report.
    pub fn warnings(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let log = "2026-01-01T00:00:00Z  INFO breeze_server: breeze-server listening on \
                   127.0.0.1:40123 db=/tmp/x scope=Contacts\n";
        assert_eq!(
            parse_listening(log),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(parse_listening("starting"), None);
        let web = "INFO breeze_server: breeze-server listening on 127.0.0.1:1 tls=false \
                   web=http://127.0.0.1:40124/ web_files=3\n";
        assert_eq!(parse_web(web), Some("127.0.0.1:40124".parse().unwrap()));
        assert_eq!(parse_web(log), None);
    }
}
