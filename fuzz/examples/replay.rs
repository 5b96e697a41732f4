//! Runs files through a target's check on stable, without the fuzzing runtime: the way to
//! debug a crash the fuzzer saved.
//!
//! ```sh
//! BREEZE_FUZZ_TRACE=1 cargo run --manifest-path fuzz/Cargo.toml --example replay -- \
//!     server_core fuzz/artifacts/server_core/crash-...
//! ```
//!
//! `BREEZE_FUZZ_TRACE=1` makes `server_core` print every step, frame, storage request and
//! event as it goes; without it a failing file just panics with the broken invariant.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), files) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: replay <frame_decoder|server_core> FILE...");
        std::process::exit(2);
    };
    let check: fn(&[u8]) = match target.as_str() {
        "frame_decoder" => breeze_fuzz::frame_decoder::check,
        "server_core" => breeze_fuzz::server_core::run_bytes,
        other => {
            eprintln!("no target {other:?}: frame_decoder or server_core");
            std::process::exit(2);
        }
    };
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        eprintln!("== {file} ({} bytes)", bytes.len());
        check(&bytes);
    }
    eprintln!("ok");
}
