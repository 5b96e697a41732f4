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
