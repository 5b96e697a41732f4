//! Fuzz targets for `breeze-core`. The checks live here, not in the `fuzz_targets/` binaries,
//! so that `cargo test` replays the checked-in corpus through exactly the same code on
//! stable, without the fuzzing runtime.
//!
//! * [`frame_decoder`]: the length-prefixed framing and the postcard decoding of both
//!   message types.
//! * [`server_core`]: the sans-IO server under sequences of connections, frames, closes,
//!   virtual time and storage results.
//! * [`seeds`]: the checked-in seed inputs, as code.

pub mod frame_decoder;
pub mod seeds;
pub mod server_core;
