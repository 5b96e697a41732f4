//! Replays the corpus through the same checks the fuzz targets run, on stable and without the
//! fuzzing runtime, and keeps the checked-in seeds in step with `src/seeds.rs`.

use arbitrary::{Arbitrary, Unstructured};
use breeze_fuzz::server_core::ServerInput;
use breeze_fuzz::{frame_decoder, seeds, server_core};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every file in the target's corpus directory: the checked-in seeds and regressions, and
/// whatever local fuzzing added.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus/{target}: {e}"))
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.is_file() && !path.ends_with(".gitignore"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("readable");
            (path, bytes)
        })
        .collect()
}

/// Crashes the fuzzer found in breeze-core that are not fixed yet: (target, corpus file,
/// what is wrong). Their files must still fail; once the core is fixed, the test says so and
/// the entry goes, leaving the file as an ordinary regression input.
const KNOWN_CRASHES: &[(&str, &str, &str)] = &[];

fn replay(target: &str, check: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "corpus/{target} is empty");
    for (path, bytes) in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let known = KNOWN_CRASHES
            .iter()
            .find(|(t, file, _)| *t == target && *file == name);
        eprintln!("{target}: {}", path.display());
        match known {
            None => check(bytes),
            Some((_, _, what)) => {
                let outcome = std::panic::catch_unwind(|| check(bytes));
                assert!(
                    outcome.is_err(),
                    "{name} passes now: remove it from KNOWN_CRASHES ({what})"
                );
                eprintln!("  known crash, still open: {what}");
            }
        }
    }
}

#[test]
fn frame_decoder_corpus_replays() {
    replay("frame_decoder", frame_decoder::check);
}

#[test]
fn server_core_corpus_replays() {
    replay("server_core", server_core::run_bytes);
}

/// The checked-in `seed-*` files are exactly what `src/seeds.rs` builds (or are written from
/// it with `BREEZE_FUZZ_WRITE_SEEDS=1`).
#[test]
fn seed_files_match_the_code() {
    let write = std::env::var_os("BREEZE_FUZZ_WRITE_SEEDS").is_some();
    for (target, seeds) in [
        ("frame_decoder", seeds::frame_decoder()),
        ("server_core", seeds::server_core()),
    ] {
        for (name, bytes) in seeds {
            let path = corpus_dir(target).join(name);
            if write {
                std::fs::write(&path, &bytes).expect("writable");
            } else {
                let on_disk = std::fs::read(&path).unwrap_or_default();
                assert!(
                    on_disk == bytes,
                    "{} differs from src/seeds.rs: rerun with BREEZE_FUZZ_WRITE_SEEDS=1",
                    path.display()
                );
            }
        }
    }
}

/// The hand-written encoding decodes back through `arbitrary` to the very same input, so
/// each server_core seed is the scenario `src/seeds.rs` spells out.
#[test]
fn server_core_seeds_decode_to_what_they_spell() {
    let inputs = seeds::server_core_inputs()
        .into_iter()
        .chain(seeds::server_core_regressions());
    for ((name, bytes), (_, input)) in seeds::server_core().into_iter().zip(inputs) {
        assert!(bytes.len() >= <ServerInput as Arbitrary>::size_hint(0).0);
        let decoded = ServerInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(decoded, input, "{name}");
    }
}
