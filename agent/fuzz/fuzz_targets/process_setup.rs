//! Fuzzes an exec's process description (ExecProcess): `parse_process`, then
//! `process_setup` (user, environment, command, capabilities, rlimits).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ward_agent::container::plan::{parse_process, process_setup};

fuzz_target!(|data: &[u8]| {
    if let Ok(process) = parse_process(data) {
        let _ = process_setup(&process, Path::new("/nonexistent/ward-fuzz-rootfs"));
    }
});
