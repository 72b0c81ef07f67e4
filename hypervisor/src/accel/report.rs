//! What the accelerator probe found, and what that means: the report `ward check` shows and
//! the cache keeps.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Loop iterations per second at guest ring 0 from which KVM counts as hardware-backed:
/// real hardware does one iteration a cycle or so (billions a second), emulation of guest
/// ring 0 (PVM) about 0.7 million. Nested KVM inside a TCG-emulated SVM machine (the L1
/// of the KVM tests) measured about 100 million on a loaded 2-core host, so the bar sits
/// an order of magnitude from both.
pub const HARDWARE_MIN_ITERATIONS_PER_SEC: f64 = 10e6;

/// What KVM is worth on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvmClass {
    /// Bare metal: guest kernel code runs in hardware (VT-x/AMD-V). Use KVM.
    Hardware,
    /// This host is itself a VM, and its KVM runs guest kernel code at hardware speed
    /// through nested virtualization (a cloud VM with nested VT-x/AMD-V, or an L1 on an
    /// emulated SVM CPU). Use KVM.
    Nested,
    /// KVM works, but guest kernel code is emulated (e.g. PVM): TCG is faster, and
    /// guests' `syscall` may not even work.
    EmulatedRing0,
    /// There is no /dev/kvm.
    Absent,
    /// /dev/kvm exists but cannot run a VM; `ProbeReport::reason` says why.
    Unusable,
}

impl KvmClass {
    /// Whether ward runs VMs on KVM here.
    pub fn runs_guest_kernels_in_hardware(self) -> bool {
        matches!(self, KvmClass::Hardware | KvmClass::Nested)
    }
}

impl fmt::Display for KvmClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvmClass::Hardware => "hardware",
            KvmClass::Nested => "nested",
            KvmClass::EmulatedRing0 => "emulated-ring0",
            KvmClass::Absent => "absent",
            KvmClass::Unusable => "unusable",
        })
    }
}

/// The outcome of one probe, as cached and as `ward check` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Whether /dev/kvm exists (it may still be unusable).
    pub kvm_present: bool,
    /// KVM_GET_API_VERSION, when /dev/kvm could be opened.
    pub api_version: Option<i32>,
    pub class: KvmClass,
    /// The guest ring-0 loop's speed; 0 when it could not run.
    pub ring0_iterations_per_sec: f64,
    /// The same loop at guest ring 3; `None` when that could not run (see `ring3_note`).
    pub ring3_iterations_per_sec: Option<f64>,
    /// Why ring 3 could not be measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring3_note: Option<String>,
    /// Why the class is what it is, in a sentence.
    pub reason: String,
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kvm: {}", self.class)?;
        if let Some(version) = self.api_version {
            write!(f, " (api {version})")?;
        }
        if self.ring0_iterations_per_sec > 0.0 {
            write!(
                f,
                "; ring 0: {:.1}M loop iterations/s",
                self.ring0_iterations_per_sec / 1e6
            )?;
        }
        match (self.ring3_iterations_per_sec, &self.ring3_note) {
            (Some(rate), _) => write!(f, "; ring 3: {:.1}M/s", rate / 1e6)?,
            (None, Some(note)) => write!(f, "; ring 3 unavailable: {note}")?,
            (None, None) => {}
        }
        write!(f, "; {}", self.reason)
    }
}

/// The class a measured ring-0 speed stands for, on a host that is (`under_hypervisor`)
/// or is not itself a virtual machine.
pub fn classify(ring0_iterations_per_sec: f64, under_hypervisor: bool) -> KvmClass {
    if ring0_iterations_per_sec < HARDWARE_MIN_ITERATIONS_PER_SEC {
        KvmClass::EmulatedRing0
    } else if under_hypervisor {
        KvmClass::Nested
    } else {
        KvmClass::Hardware
    }
}

/// The report of a probe that found no usable KVM: `Absent` without /dev/kvm.
pub fn unusable(kvm_present: bool, api_version: Option<i32>, reason: String) -> ProbeReport {
    ProbeReport {
        kvm_present,
        api_version,
        class: if kvm_present {
            KvmClass::Unusable
        } else {
            KvmClass::Absent
        },
        ring0_iterations_per_sec: 0.0,
        ring3_iterations_per_sec: None,
        ring3_note: None,
        reason,
    }
}

/// The report for measured speeds (`ring3` is the ring-3 outcome, speed or why not).
pub fn measured(
    api_version: i32,
    ring0: f64,
    ring3: Result<f64, String>,
    under_hypervisor: bool,
) -> ProbeReport {
    let class = classify(ring0, under_hypervisor);
    let threshold = HARDWARE_MIN_ITERATIONS_PER_SEC / 1e6;
    let reason = match class {
        KvmClass::Hardware => format!(
            "guest kernel code runs at hardware speed (at least {threshold:.0}M iterations/s)"
        ),
        KvmClass::Nested => format!(
            "this host is a VM and its KVM runs guest kernel code at hardware speed through \
             nested virtualization (at least {threshold:.0}M iterations/s)"
        ),
        _ => format!(
            "guest kernel code is emulated (below {threshold:.0}M iterations/s): TCG is faster"
        ),
    };
    let (ring3_iterations_per_sec, ring3_note) = match ring3 {
        Ok(rate) => (Some(rate), None),
        Err(why) => (None, Some(why)),
    };
    ProbeReport {
        kvm_present: true,
        api_version: Some(api_version),
        class,
        ring0_iterations_per_sec: ring0,
        ring3_iterations_per_sec,
        ring3_note,
        reason,
    }
}

/// Whether this host is itself a virtual machine: CPUID's hypervisor bit, as the kernel
/// lists it among the CPU's flags.
pub fn under_hypervisor(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|flag| flag == "hypervisor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_ring0_speed_and_by_whether_the_host_is_a_vm() {
        // Bare metal with VT-x/AMD-V.
        assert_eq!(classify(3e9, false), KvmClass::Hardware);
        assert_eq!(
            classify(HARDWARE_MIN_ITERATIONS_PER_SEC, false),
            KvmClass::Hardware
        );
        // A VM whose KVM has nested virtualization (the L1 of the KVM tests).
        assert_eq!(classify(3e8, true), KvmClass::Nested);
        // PVM: ring 0 emulated at about a million instructions a second, VM or not.
        assert_eq!(classify(9e6, false), KvmClass::EmulatedRing0);
        assert_eq!(classify(0.5e6, true), KvmClass::EmulatedRing0);
        assert!(KvmClass::Hardware.runs_guest_kernels_in_hardware());
        assert!(KvmClass::Nested.runs_guest_kernels_in_hardware());
        assert!(!KvmClass::EmulatedRing0.runs_guest_kernels_in_hardware());
        assert!(!KvmClass::Absent.runs_guest_kernels_in_hardware());
        assert!(!KvmClass::Unusable.runs_guest_kernels_in_hardware());
    }

    #[test]
    fn pvm_like_numbers_are_emulated_and_keep_ring3() {
        let report = measured(12, 0.6e6, Ok(2.5e9), true);
        assert_eq!(report.class, KvmClass::EmulatedRing0);
        assert_eq!(report.ring3_iterations_per_sec, Some(2.5e9));
        assert!(report.to_string().contains("emulated"), "{report}");

        let report = measured(12, 2e9, Err("KVM_SET_SREGS: EINVAL".into()), false);
        assert_eq!(report.class, KvmClass::Hardware);
        assert_eq!(report.ring3_note.as_deref(), Some("KVM_SET_SREGS: EINVAL"));

        let report = measured(12, 2e8, Ok(2e8), true);
        assert_eq!(report.class, KvmClass::Nested);
        assert!(report.reason.contains("nested"), "{report}");
    }

    #[test]
    fn no_device_is_absent_and_a_broken_one_unusable() {
        let report = unusable(false, None, "cannot open /dev/kvm: ENOENT".into());
        assert_eq!(report.class, KvmClass::Absent);
        let json = serde_json::to_string(&report).expect("serialize");
        let back: ProbeReport = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, report);
        assert!(json.contains("\"class\":\"absent\""), "{json}");

        let report = unusable(true, Some(12), "cannot create a VM: EBUSY".into());
        assert_eq!(report.class, KvmClass::Unusable);
        let json = serde_json::to_string(&measured(12, 1e6, Ok(1e9), true)).expect("json");
        assert!(json.contains("\"class\":\"emulated-ring0\""), "{json}");
    }

    #[test]
    fn the_hypervisor_flag_marks_a_vm() {
        let vm = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr hypervisor lahf_lm svm\n";
        let metal = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr lahf_lm svm\n";
        assert!(under_hypervisor(vm));
        assert!(!under_hypervisor(metal));
        // A flag that merely contains the word does not count.
        assert!(!under_hypervisor("flags\t\t: fpu not_a_hypervisor_flag\n"));
        assert!(!under_hypervisor(""));
    }
}
