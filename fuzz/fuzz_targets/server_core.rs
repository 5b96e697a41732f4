#![no_main]

use breeze_fuzz::server_core::{ServerInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: ServerInput| {
    run(&input);
});
