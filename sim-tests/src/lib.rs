//! Deterministic simulations of Breeze on turmoil's simulated network.
//!
//! The real `breeze_transport_tokio::Host` (over the real server core and the real
//! `breeze_store::Db`) and the real `run_client` (over the real client core) run on turmoil
//! hosts: one server, several clients. A seed chooses the cluster's settings and a schedule
//! of faults and traffic ([`plan`]); the driver ([`harness`]) performs it tick by tick; an
//! oracle that never reads the server's state ([`oracle`]) checks that presence is exact and
//! messages arrive once.
//!
//! The cluster simulation ([`cluster`]) runs several such server hosts as the nodes of one
//! cluster, sharing one `Db` and a model of the NATS bus ([`bus`]), with clients moving
//! between them; its plan ([`cluster_plan`]) crashes, restarts and cuts off nodes, and its
//! oracle ([`cluster_oracle`]) checks fencing, node deadlines, convergence and messages.
//!
//! Replaying a seed: `SIM_SEED=1234 cargo test -p breeze-sim-tests --release -- random_seeds
//! --nocapture` (add `SIM_TRACE=1` for the whole event log). Soaks: `SIM_SEEDS=10000` with the
//! same command, or the `sim-soak` binary (from a random base seed unless told one).

pub mod bus;
pub mod cluster;
pub mod cluster_net;
pub mod cluster_oracle;
pub mod cluster_plan;
pub mod completions;
pub mod harness;
pub mod log;
pub mod net;
pub mod oracle;
pub mod plan;
pub mod room_log;
pub mod runner;
pub mod storage;

pub use harness::{Harness, Outcome, run, run_seed};
pub use plan::{Action, Plan, SimConfig};
