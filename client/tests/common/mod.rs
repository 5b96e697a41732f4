//! A real server in-process and the real `breeze` binary as a subprocess, with every wait
//! bounded.

#![allow(dead_code)]

use breeze_core::UserId;
use breeze_server::Settings;
use breeze_testsupport::process::{lines, wait_exit};
use breeze_testsupport::{InProcess, WAIT};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_breeze");

/// The user every server lets run `admin who`.
pub const ADMIN: &str = "root";

/// A server (`InProcess`) on its own runtime, for tests that are not async themselves.
pub struct TestServer {
    runtime: tokio::runtime::Runtime,
    server: Option<InProcess>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    /// A server whose settings `adjust` changes first.
    pub fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(InProcess::start(|settings| {
            settings.server.admins.insert(UserId::new(ADMIN).unwrap());
            adjust(settings);
        }));
        TestServer {
            addr: server.addr(),
            server: Some(server),
            runtime,
        }
    }

    /// `breeze ARGS` with BREEZE_SERVER naming this server (a `--server` in ARGS wins), and
    /// no other BREEZE_* from the environment of the test.
    pub fn breeze(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("BREEZE_SERVER", self.addr.to_string())
            .env_remove("BREEZE_USER")
            .env_remove("BREEZE_PASSWORD")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        cmd
    }

    /// Runs a one-shot command to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        run(self.breeze(args))
    }

    /// `breeze send --to TO BODY` as `from`, with its password.
    pub fn send(&self, from: &str, to: &str, body: &str) -> Output {
        let pw = password(from);
        self.run(&["send", "--user", from, "--password", &pw, "--to", to, body])
    }

    /// `breeze admin who` as `user`, with its password.
    pub fn admin_who(&self, user: &str) -> Output {
        self.admin(user, &["who"])
    }

    /// `breeze admin ARGS` (`who`, `kick bob`, …) as `user`, with its password.
    pub fn admin(&self, user: &str, args: &[&str]) -> Output {
        let password = password(user);
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--user", user, "--password", &password]);
        self.run(&all)
    }

    pub fn register(&self, user: &str) {
        let out = self.run(&["register", "--user", user, "--password", &password(user)]);
        assert!(out.status.success(), "register {user}: {}", text(&out));
        assert_eq!(stdout(&out), format!("registered {user}\n"));
    }

    /// `breeze chat` as `user`, stdin piped and kept open.
    pub fn chat(&self, user: &str, extra: &[&str]) -> ChatProcess {
        let mut args = vec!["chat", "--user", user];
        args.extend_from_slice(extra);
        let mut cmd = self.breeze(&args);
        // The password through the environment, as a user would keep it out of `ps`.
        cmd.env("BREEZE_PASSWORD", password(user));
        ChatProcess::spawn(cmd)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.stop());
        }
    }
}

/// A loopback address that was free a moment ago and has nobody listening now.
pub fn closed_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs a command to its end, with no input, within `WAIT`.
pub fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child)
}

/// Every user's password in these tests.
pub fn password(user: &str) -> String {
    format!("{user}-password")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// Waits (bounded) for a child that was spawned with piped output.
pub fn wait_output(mut child: Child) -> Output {
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let status = wait_exit(&mut child);
    Output {
        status,
        stdout: out.recv_timeout(WAIT).unwrap_or_default(),
        stderr: err.recv_timeout(WAIT).unwrap_or_default(),
    }
}

fn collect(mut pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// A running `breeze chat` on a pseudo-terminal, as a person runs it: the line editor is on,
/// keys go in as typed, and what comes out is what the terminal is sent, escapes and all.
#[cfg(unix)]
pub struct TerminalChat {
    child: Child,
    keys: std::fs::File,
    output: mpsc::Receiver<Vec<u8>>,
    /// Everything the terminal was sent so far.
    pub seen: Vec<u8>,
    /// Where the next `expect` starts looking.
    from: usize,
}

#[cfg(unix)]
impl TestServer {
    /// `breeze chat` as `user` on a terminal of 24 rows of 100 columns, its history in memory
    /// (never in the data folder of whoever runs the tests). The terminal is its controlling
    /// one, as a person's is (password prompts open /dev/tty), through util-linux's `setsid`.
    pub fn chat_on_terminal(&self, user: &str) -> TerminalChat {
        use nix::pty::{Winsize, openpty};
        let size = Winsize {
            ws_row: 24,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).unwrap();
        let chat = self.breeze(&["chat", "--user", user]);
        let mut cmd = Command::new("setsid");
        cmd.args(["--ctty", "--wait"])
            .arg(chat.get_program())
            .args(chat.get_args());
        for (name, value) in chat.get_envs() {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd.env("BREEZE_PASSWORD", password(user))
            .env("BREEZE_HISTORY_FILE", "")
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run setsid (util-linux): {e}"));
        // The command holds copies of the terminal's far end: gone, reading ends when the
        // child does.
        drop(cmd);
        let keys = std::fs::File::from(pty.master);
        let mut screen = keys.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            // Ends with an error (EIO) once the child has exited.
            while let Ok(n @ 1..) = std::io::Read::read(&mut screen, &mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        TerminalChat {
            child,
            keys,
            output,
            seen: Vec::new(),
            from: 0,
        }
    }
}

#[cfg(unix)]
impl TerminalChat {
    /// Waits for `needle` in what the terminal is sent after the last one found; returns
    /// where it starts in `seen`.
    pub fn expect(&mut self, needle: &str) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.seen[self.from..]
                .windows(needle.len())
                .position(|w| w == needle.as_bytes());
            if let Some(at) = found {
                let at = self.from + at;
                self.from = at + needle.len();
                return at;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.extend_from_slice(&bytes),
                Err(_) => panic!(
                    "no {needle:?} within {WAIT:?}; the terminal was sent:\n{:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Keys as typed: `\r` is Enter, `\t` Tab, `\x03` Ctrl-C.
    pub fn type_keys(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// What the terminal shows on the line where `seen[at]` is printed, up to it: the bytes
    /// since the last carriage return or newline, control sequences left out.
    pub fn shown_before(&self, at: usize) -> String {
        let start = self.seen[..at]
            .iter()
            .rposition(|b| *b == b'\r' || *b == b'\n')
            .map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&self.seen[start..at]).into_owned();
        let mut shown = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // ESC [ parameters, then a final letter.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() || c == '~' {
                            break;
                        }
                    }
                }
            } else if !c.is_control() {
                shown.push(c);
            }
        }
        shown
    }

    /// Waits for the process to exit (bounded).
    pub fn exit(mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }
}

#[cfg(unix)]
impl Drop for TerminalChat {
    fn drop(&mut self) {
        // Only this test's own child, by its handle.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `breeze chat`: its stdin to type into, and its output lines as they come.
pub struct ChatProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
    /// Every stdout line so far, for failure messages.
    pub seen: Vec<String>,
}

impl ChatProcess {
    fn spawn(mut cmd: Command) -> ChatProcess {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ChatProcess {
            stdin: child.stdin.take(),
            lines: lines(child.stdout.take().unwrap()),
            errors: lines(child.stderr.take().unwrap()),
            child,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle`, and returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {WAIT:?}; output so far:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.errors.try_iter().collect::<Vec<_>>().join("\n")
                ),
            }
        }
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the process to exit (bounded); returns its status and stderr.
    pub fn exit(mut self) -> (ExitStatus, String) {
        let status = wait_exit(&mut self.child);
        let mut err = Vec::new();
        while let Ok(line) = self.errors.recv_timeout(Duration::from_millis(500)) {
            err.push(line);
        }
        (status, err.join("\n"))
    }
}

impl Drop for ChatProcess {
    fn drop(&mut self) {
        // Only this test's own child, by its handle.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
