//! Choosing the accelerator: KVM only where it runs guest kernel code at hardware speed.
//!
//! The probe (see [`probe`]) costs a throwaway VM and up to a fraction of a second, so
//! its report is cached per host boot: a reboot or a new host kernel may change the
//! answer, nothing else does.

pub mod cache;
mod loop_vm;
pub mod probe;
pub mod report;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cache::HostKey;
pub use probe::probe;
pub use report::{classify, KvmClass, ProbeReport, HARDWARE_MIN_ITERATIONS_PER_SEC};

use crate::{AccelChoice, Error, Result};

/// Where ward caches host facts unless configured otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/ward";

/// The accelerator a VM runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl Accel {
    /// The accelerator a probe report stands for.
    pub fn from_class(class: KvmClass) -> Accel {
        if class.runs_guest_kernels_in_hardware() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// The accelerator to use for `choice`. `Auto` probes at most once per host boot (the
/// report is cached in `cache_dir`); a forced choice does not probe, but a forced KVM must
/// at least be openable, so that the error names /dev/kvm rather than QEMU's start-up.
pub fn resolve(choice: AccelChoice, cache_dir: &Path) -> Result<Accel> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .map_err(|e| {
                    Error::Config(format!(
                        "the accelerator is set to kvm but /dev/kvm cannot be opened: {e}"
                    ))
                })?;
            Ok(Accel::Kvm)
        }
        AccelChoice::Auto => Ok(Accel::from_class(probe_report(cache_dir, false).class)),
    }
}

/// This host's probe report: the cached one for this boot unless `refresh`, else a new
/// probe (whose report is then cached; a cache that cannot be written costs only time).
pub fn probe_report(cache_dir: &Path, refresh: bool) -> ProbeReport {
    match HostKey::current() {
        Ok(key) => cached_or_probe(&cache_file(cache_dir), &key, refresh, probe::probe),
        // Without a key nothing can be cached safely: probe every time.
        Err(_) => probe::probe(),
    }
}

/// The cache file within `cache_dir`.
pub fn cache_file(cache_dir: &Path) -> PathBuf {
    cache_dir.join("accel-probe.json")
}

fn cached_or_probe(
    file: &Path,
    key: &HostKey,
    refresh: bool,
    probe: impl FnOnce() -> ProbeReport,
) -> ProbeReport {
    if !refresh {
        if let Some(report) = cache::load(file, key) {
            return report;
        }
    }
    let report = probe();
    let _ = cache::store(file, key, &report);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn key(boot: &str) -> HostKey {
        HostKey {
            boot_id: boot.to_string(),
            kernel_release: "6.1.0-test".to_string(),
        }
    }

    fn emulated() -> ProbeReport {
        report::measured(12, 1e6, Ok(3e9), true)
    }

    #[test]
    fn probes_once_per_boot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = cache_file(dir.path());
        let probes = Cell::new(0);
        let probe = || {
            probes.set(probes.get() + 1);
            emulated()
        };

        let first = cached_or_probe(&file, &key("boot-a"), false, probe);
        assert_eq!(probes.get(), 1);
        let hit = cached_or_probe(&file, &key("boot-a"), false, probe);
        assert_eq!(probes.get(), 1, "a cache hit must not probe");
        assert_eq!(hit, first);

        cached_or_probe(&file, &key("boot-b"), false, probe);
        assert_eq!(probes.get(), 2, "another boot is a miss");
        cached_or_probe(&file, &key("boot-b"), true, probe);
        assert_eq!(probes.get(), 3, "refresh always probes");
    }

    #[test]
    fn a_corrupt_or_unwritable_cache_only_costs_a_probe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = cache_file(dir.path());
        std::fs::write(&file, b"{ not json").expect("write");
        let report = cached_or_probe(&file, &key("boot-a"), false, emulated);
        assert_eq!(report.class, KvmClass::EmulatedRing0);

        let unwritable = dir.path().join("a-file").join("accel-probe.json");
        std::fs::write(dir.path().join("a-file"), b"").expect("write");
        let report = cached_or_probe(&unwritable, &key("boot-a"), false, emulated);
        assert_eq!(report.class, KvmClass::EmulatedRing0);
    }

    #[test]
    fn forced_choices_do_not_probe() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            resolve(AccelChoice::Tcg, dir.path()).expect("tcg"),
            Accel::Tcg
        );
        assert!(!cache_file(dir.path()).exists());
    }

    #[test]
    fn classes_map_to_accelerators() {
        assert_eq!(Accel::from_class(KvmClass::Hardware), Accel::Kvm);
        assert_eq!(Accel::from_class(KvmClass::EmulatedRing0), Accel::Tcg);
        assert_eq!(Accel::from_class(KvmClass::Unusable), Accel::Tcg);
        assert_eq!(Accel::from_class(KvmClass::Absent), Accel::Tcg);
        assert_eq!(Accel::from_class(KvmClass::Nested), Accel::Kvm);
        assert_eq!(Accel::Kvm.to_string(), "kvm");
        assert_eq!(serde_json::to_string(&Accel::Tcg).expect("json"), "\"tcg\"");
    }
}
