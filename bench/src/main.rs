//! `breeze-bench`: runs one scenario against a breeze-server and prints a table and one JSON
//! line. Progress goes to stderr.

use breeze_bench::import::{self, ImportArgs};
use breeze_bench::mosquitto::{self, MosquittoHoldArgs};
use breeze_bench::room::{self, RoomArgs};
use breeze_bench::scenarios::{self, AbruptArgs, ChatArgs, DetectArgs, HoldArgs, NodeKillArgs};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Load generator for breeze-server over loopback TCP.
///
/// Starts its own release server (target/release/breeze-server, fresh temporary database),
/// or a cluster of them (`--nodes`), unless given `--addr`. Every phase is bounded in time; all traffic stays on 127.0.0.0/8.
#[derive(Debug, Parser)]
#[command(name = "breeze-bench", version)]
struct Cli {
    /// Worker threads of the bench's one tokio runtime (it shares the cores with the server).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Login storm, presence convergence, idle memory and CPU, then a reconnect storm.
    Hold(HoldArgs),
    /// `hold`'s idle figures for Mosquitto, in the same run: starts its own Mosquitto
    /// (`--mosquitto-bin`), connects MQTT clients that mirror `hold`'s (ring contacts as
    /// subscriptions, retained online and will), and measures the broker's CPU over an idle
    /// window of PINGREQs paced as `hold`'s pings.
    MosquittoHold(MosquittoHoldArgs),
    /// Silent peers: time from their last frame to their watchers' offline notice.
    Detect(DetectArgs),
    /// Closing peers (FIN or RST): time from the close to their watchers' offline notice.
    Abrupt(AbruptArgs),
    /// A cluster node SIGKILLed (`--nodes` 2 or more): time from the kill to every watcher's
    /// offline notice of its users, and ghosts after.
    NodeKill(NodeKillArgs),
    /// Pairs of users messaging each other: throughput, loss, latency, server CPU.
    Chat(ChatArgs),
    /// Rooms of members (some offline) messaging at a fixed rate: deliveries, latency, server
    /// CPU per delivered message, and each offline member's backlog at login.
    Room(RoomArgs),
    /// A client importing its address book (1,000 contacts) in one request: bytes and time.
    Import(ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fd_limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("breeze-bench: cannot raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("breeze-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = cli.threads.max(1);
    let result = runtime.block_on(async move {
        match cli.scenario {
            Scenario::Hold(a) => scenarios::hold(a, fd_limit).await,
            Scenario::MosquittoHold(a) => mosquitto::mosquitto_hold(a, fd_limit).await,
            Scenario::Detect(a) => scenarios::detect(a, fd_limit).await,
            Scenario::Abrupt(a) => scenarios::abrupt(a, fd_limit).await,
            Scenario::NodeKill(a) => scenarios::node_kill(a, fd_limit).await,
            Scenario::Chat(a) => scenarios::chat(a, fd_limit).await,
            Scenario::Room(a) => room::room(a, fd_limit).await,
            Scenario::Import(a) => import::import(a, fd_limit).await,
        }
    });
    match result {
        Ok(mut report) => {
            report
                .field("bench_threads", threads)
                .field("fd_limit", fd_limit);
            report.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("breeze-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
