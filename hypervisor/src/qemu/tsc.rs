//! The host's TSC frequency, for `tsc_early_khz=`.
//!
//! A microvm has no PIT (and under TCG no kvmclock) to calibrate the TSC against, and a
//! guest that cannot calibrate waits for a calibration that never comes. Under both TCG
//! and KVM the guest's TSC ticks at the host's rate, so the host's frequency is the right
//! hint. It is measured against CLOCK_MONOTONIC once per host boot and cached.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::accel::{cache, HostKey};

/// Long enough for a few-ppm error with the pairing of readings below.
const MEASURE_FOR: Duration = Duration::from_millis(20);

/// The host TSC frequency in kHz, cached in `cache_dir` per boot; `None` if it cannot be
/// measured (no invariant TSC readings that make sense).
pub fn host_tsc_khz(cache_dir: &Path) -> Option<u32> {
    let file = cache_dir.join("host-tsc-khz.json");
    let key = HostKey::current().ok();
    if let Some(khz) = key.as_ref().and_then(|key| cache::load::<u32>(&file, key)) {
        return Some(khz);
    }
    let khz = measure()?;
    if let Some(key) = key {
        let _ = cache::store(&file, &key, &khz);
    }
    Some(khz)
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter; every x86-64 CPU has it and it
    // touches no memory.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
}

/// A (TSC, time) pair taken as close together as this thread can: the tighter of a few.
fn paired_reading() -> (u64, Instant) {
    let mut best: Option<(u64, u64, Instant)> = None;
    for _ in 0..5 {
        let before = rdtsc();
        let now = Instant::now();
        let after = rdtsc();
        let width = after.wrapping_sub(before);
        if best.is_none_or(|(w, _, _)| width < w) {
            best = Some((width, before + width / 2, now));
        }
    }
    let (_, tsc, now) = best.unwrap_or((0, rdtsc(), Instant::now()));
    (tsc, now)
}

fn measure() -> Option<u32> {
    let (tsc0, t0) = paired_reading();
    std::thread::sleep(MEASURE_FOR);
    let (tsc1, t1) = paired_reading();
    let nanos = t1.duration_since(t0).as_nanos();
    let ticks = u128::from(tsc1.checked_sub(tsc0)?);
    let khz = ticks.checked_mul(1_000_000)? / nanos.max(1);
    // Anything outside 100 MHz..20 GHz is a broken reading, not a CPU.
    (100_000..20_000_000).contains(&khz).then_some(khz as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_plausible_frequency_and_caches_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let khz = host_tsc_khz(dir.path()).expect("x86-64 hosts have a TSC");
        eprintln!("host TSC: {khz} kHz");
        assert_eq!(host_tsc_khz(dir.path()), Some(khz), "second call is cached");
        assert!(dir.path().join("host-tsc-khz.json").exists());
    }
}
