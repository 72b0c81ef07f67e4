//! Fuzzes the translation of a container's `linux.seccomp` (agent/src/container/seccomp.rs):
//! `parse`, `translate`, then `compile`, which has libseccomp build the filter and export
//! its BPF program (nothing is loaded). The profile is in config.json, host input that a
//! compromised runtime or engine controls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_agent::container::seccomp;

fuzz_target!(|data: &[u8]| {
    let Ok(profile) = seccomp::parse(data) else {
        return;
    };
    if let Ok(translated) = seccomp::translate(&profile) {
        if let Ok(filter) = seccomp::compile(&translated) {
            assert!(filter.instructions() <= 4096);
        }
    }
});
