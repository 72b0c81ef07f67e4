//! `ward check` on a KVM that runs guest kernel code in hardware.

use ward_e2e::{text, Ward};

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
