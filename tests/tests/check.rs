//! `ward check` and `ward env` on the machine the tests run on.

use ward_e2e::{assert_fails_with, text, Ward};

#[test]
fn check_says_ward_can_run_here_and_is_consistent() {
    let ward = Ward::new();
    let out = ward.run(&["check", "--json"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "ward check --json failed: {stdout}\n{}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let items = report["items"].as_array().expect("items");
    assert!(!items.is_empty());
    for item in items {
        let status = item["status"].as_str().unwrap_or_default();
        assert!(
            ["pass", "warn", "fail"].contains(&status),
            "bad status in {item}"
        );
        assert!(item["id"].is_string() && item["group"].is_string() && item["message"].is_string());
        assert_ne!(
            status, "fail",
            "ward runs its tests here, so nothing fails: {item}"
        );
    }
    let summary = &report["summary"];
    assert_eq!(summary["can_run"], true, "{summary}");
    let class = summary["kvm_class"].as_str().expect("kvm_class");
    assert!(
        ["hardware", "nested", "emulated-ring0", "absent", "unusable"].contains(&class),
        "{class}"
    );
    // The test configuration leaves hypervisor.accel and backend at auto: KVM, and
    // ward-vmm (built next to ward), only where guest kernel code runs in hardware.
    let kvm_speed = ["hardware", "nested"].contains(&class);
    let expected = if kvm_speed { "kvm" } else { "tcg" };
    assert_eq!(summary["accelerator"], expected, "{summary}");
    let backend = if kvm_speed { "builtin" } else { "qemu" };
    assert_eq!(summary["backend"], backend, "{summary}");
    if !std::path::Path::new("/dev/kvm").exists() {
        assert_eq!(class, "absent");
    }
    // The text form agrees with the JSON one.
    let out = ward.run(&["check", "--verbose"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(&format!("accelerator: {expected}")));
}

#[test]
fn a_missing_configuration_file_is_an_error() {
    let ward = Ward::new();
    let missing = ward.dir.path().join("nonexistent.toml");
    assert_fails_with(
        &ward.run_with_config(&missing, &["check"]),
        "does not exist",
    );
    assert_fails_with(&ward.run_with_config(&missing, &["env"]), "does not exist");
}

#[test]
fn env_prints_the_configuration_and_assets() {
    let ward = Ward::new();
    let out = ward.run(&["env"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let config = std::fs::read_to_string(&ward.config).expect("test configuration");
    let kernel = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("kernel = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("the test configuration names a kernel");
    assert!(stdout.contains(&kernel), "{stdout}");
    assert!(
        stdout.contains(&ward.config.display().to_string()),
        "{stdout}"
    );

    let out = ward.run(&["env", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["assets"]["kernel"]["path"], kernel.as_str());
    assert_eq!(doc["assets"]["kernel"]["present"], true);
}
