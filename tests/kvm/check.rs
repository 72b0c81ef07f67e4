//! `ward check` on a KVM that runs guest kernel code in hardware.

use ward_e2e::{text, Ward};

use ward_hypervisor::KvmClass;

use super::{require_hardware_kvm, require_vmm};

#[test]
fn check_reports_hardware_kvm_and_chooses_builtin() {
    let class = require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let out = ward.run(&["check", "--json"]);
    let stdout = text(&out.stdout);
    eprintln!("ward check --json here:\n{stdout}");
    assert!(
        out.status.success(),
        "ward check failed: {stdout}\n{}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let summary = &report["summary"];
    assert_eq!(summary["kvm_class"], class.to_string(), "{summary}");
    assert_eq!(summary["backend"], "builtin", "{summary}");
    assert_eq!(summary["accelerator"], "kvm", "{summary}");
    assert_eq!(summary["can_run"], true, "{summary}");
    let class_item = report["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == "kvm.class")
        .expect("a kvm.class item");
    assert_eq!(class_item["status"], "pass", "{class_item}");
}

/// The accelerator probe itself, on the real thing: its loop VM completes at guest ring 0
/// and 3 at hardware speed, whichever RIP position this KVM reports at the port exit.
#[test]
fn probe_measures_guest_kernel_code_at_hardware_speed() {
    let report = ward_hypervisor::accel::probe();
    eprintln!("accelerator probe here: {report}");
    assert!(
        report.class.runs_guest_kernels_in_hardware(),
        "the probe says {report}"
    );
    assert!(
        report.ring0_iterations_per_sec >= ward_hypervisor::accel::HARDWARE_MIN_ITERATIONS_PER_SEC,
        "{report}"
    );
    assert!(report.ring3_iterations_per_sec.is_some(), "{report}");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let expected = if ward_hypervisor::accel::report::under_hypervisor(&cpuinfo) {
        KvmClass::Nested
    } else {
        KvmClass::Hardware
    };
    assert_eq!(report.class, expected, "{report}");
}
