//! What the accelerator probe found, and what that means: the report `ward check` shows and
//! the cache keeps.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Loop iterations per second at guest ring 0 from which KVM counts as hardware-backed:
/// real hardware does one iteration a cycle or so (billions a second), emulation a few
/// million at best.
pub const HARDWARE_MIN_ITERATIONS_PER_SEC: f64 = 50e6;

/// What KVM is worth on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvmClass {
    /// Guest kernel code runs at hardware speed: use KVM.
    Hardware,
    /// KVM works but guest kernel code is emulated (e.g. PVM): TCG is faster.
    Emulated,
    /// No KVM to use; `ProbeReport::reason` says why.
    Unusable,
}

impl fmt::Display for KvmClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvmClass::Hardware => "hardware",
            KvmClass::Emulated => "emulated",
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

/// The class a measured ring-0 speed stands for.
pub fn classify(ring0_iterations_per_sec: f64) -> KvmClass {
    if ring0_iterations_per_sec >= HARDWARE_MIN_ITERATIONS_PER_SEC {
        KvmClass::Hardware
    } else {
        KvmClass::Emulated
    }
}

/// The report of a probe that found no usable KVM.
pub fn unusable(kvm_present: bool, api_version: Option<i32>, reason: String) -> ProbeReport {
    ProbeReport {
        kvm_present,
        api_version,
        class: KvmClass::Unusable,
        ring0_iterations_per_sec: 0.0,
        ring3_iterations_per_sec: None,
        ring3_note: None,
        reason,
    }
}

/// The report for measured speeds (`ring3` is the ring-3 outcome, speed or why not).
pub fn measured(api_version: i32, ring0: f64, ring3: Result<f64, String>) -> ProbeReport {
    let class = classify(ring0);
    let reason = match class {
        KvmClass::Hardware => format!(
            "guest kernel code runs at hardware speed (at least {:.0}M iterations/s)",
            HARDWARE_MIN_ITERATIONS_PER_SEC / 1e6
        ),
        _ => format!(
            "guest kernel code is emulated (below {:.0}M iterations/s): TCG is faster",
            HARDWARE_MIN_ITERATIONS_PER_SEC / 1e6
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_ring0_speed() {
        assert_eq!(classify(3e9), KvmClass::Hardware);
        assert_eq!(
            classify(HARDWARE_MIN_ITERATIONS_PER_SEC),
            KvmClass::Hardware
        );
        assert_eq!(classify(49e6), KvmClass::Emulated);
        assert_eq!(classify(0.5e6), KvmClass::Emulated);
    }

    #[test]
    fn pvm_like_numbers_are_emulated_and_keep_ring3() {
        let report = measured(12, 0.6e6, Ok(2.5e9));
        assert_eq!(report.class, KvmClass::Emulated);
        assert_eq!(report.ring3_iterations_per_sec, Some(2.5e9));
        assert!(report.to_string().contains("emulated"), "{report}");

        let report = measured(12, 2e9, Err("KVM_SET_SREGS: EINVAL".into()));
        assert_eq!(report.class, KvmClass::Hardware);
        assert_eq!(report.ring3_note.as_deref(), Some("KVM_SET_SREGS: EINVAL"));
    }

    #[test]
    fn unusable_keeps_its_reason_and_round_trips() {
        let report = unusable(false, None, "cannot open /dev/kvm: ENOENT".into());
        assert_eq!(report.class, KvmClass::Unusable);
        let json = serde_json::to_string(&report).expect("serialize");
        let back: ProbeReport = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, report);
        assert!(json.contains("\"class\":\"unusable\""), "{json}");
    }
}
