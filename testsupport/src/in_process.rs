//! The whole server — core, tokio host, SQLite store — started in the test's own runtime.

use crate::WAIT;
use breeze_core::message::WhoEntry;
use breeze_core::server::Stats;
use breeze_server::{DbLocation, Running, Settings};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::timeout;

/// Settings for an in-process server on a free loopback port over `db`: cheap password
/// hashing and short close timers, so that tests neither wait for argon2 nor for a
/// shutdown. The protocol's timers keep their defaults; tests that need others set them.
pub fn test_settings(db: &Path) -> Settings {
    let mut s = Settings::for_tests(DbLocation::File(db.to_owned()));
    s.host.linger = Duration::from_millis(200);
    s.host.shutdown_grace = Duration::from_secs(1);
    s
}

/// A server over a database in a temporary directory (removed with this value).
#[derive(Debug)]
pub struct InProcess {
    running: Option<Running>,
    settings: Settings,
    dir: tempfile::TempDir,
}

impl InProcess {
    /// Starts a server with `test_settings`, adjusted by `tweak`.
    pub async fn start(tweak: impl FnOnce(&mut Settings)) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = test_settings(&dir.path().join("breeze.db"));
        tweak(&mut settings);
        let running = start(&settings).await;
        InProcess {
            running: Some(running),
            settings,
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().local_addr()
    }

    /// Where its HTTP listener (WebSocket at `/ws`) is.
    pub fn http_addr(&self) -> SocketAddr {
        self.running()
            .http_addr()
            .expect("the test server has an HTTP listener")
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("breeze.db")
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server is stopped")
    }

    /// The running server and the directory its database is in, for a test that manages
    /// them itself (the database goes with the directory).
    pub fn into_parts(mut self) -> (Running, tempfile::TempDir) {
        let running = self.running.take().expect("server is stopped");
        (running, self.dir)
    }

    pub async fn stats(&self) -> Stats {
        self.running().stats().await.unwrap()
    }

    pub async fn who(&self) -> Vec<WhoEntry> {
        self.running().who().await.unwrap()
    }

    /// Polls the server's counters until `f` holds.
    pub async fn wait_stats(&self, what: &str, f: impl Fn(&Stats) -> bool) -> Stats {
        let polled = timeout(WAIT, async {
            loop {
                let stats = self.stats().await;
                if f(&stats) {
                    return stats;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        match polled {
            Ok(stats) => stats,
            Err(_) => panic!(
                "waited {WAIT:?} for {what}; stats: {:?}",
                self.stats().await
            ),
        }
    }

    /// Shuts the server down gracefully and starts a new one on the same database and
    /// address, as an operator's restart does: clients reconnect to where they were.
    pub async fn restart(&mut self) {
        let running = self.running.take().expect("server is stopped");
        self.settings.listen = running.local_addr();
        if running.http_addr().is_some() {
            self.settings.http_listen = running.http_addr();
        }
        stop(running).await;
        self.running = Some(start(&self.settings).await);
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            stop(running).await;
        }
    }
}

async fn start(settings: &Settings) -> Running {
    timeout(WAIT, breeze_server::start(settings.clone()))
        .await
        .expect("the server did not start within the wait bound")
        .expect("the server did not start")
}

async fn stop(running: Running) {
    timeout(WAIT, running.shutdown())
        .await
        .expect("shutdown within the wait bound");
}
