//! Test support shared by the core's unit tests, property tests and (behind the `testkit`
//! feature) fuzz targets and other crates' tests: an in-memory store, the storage contract
//! every store is checked against, and a server rig driven by virtual time.

pub mod contract;
pub mod rig;
mod store;
pub mod world;

pub use rig::Rig;
pub use store::MemStore;
pub use world::{GroupRequest, World, WorldConfig};
