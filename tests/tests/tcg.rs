//! TCG is not a security boundary: ward says so once when it starts a VM under TCG, and
//! `require_kvm = true` refuses to start one.

use ward_e2e::{pids_mentioning, text, Ward};

#[test]
fn a_vm_under_tcg_is_named_once_and_require_kvm_refuses_it() {
    let ward = Ward::new();
    let bundle = ward.bundle("tcg", &["echo", "under tcg"]);
    let bundle = bundle.to_str().unwrap();

    let tcg = ward.config_with(
        "tcg.toml",
        "[hypervisor]\nbackend = \"qemu\"\naccel = \"tcg\"",
    );
    let out = ward.run_with_config(&tcg, &["run", "--bundle", bundle, "t1"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "run under TCG: {stderr}");
    assert_eq!(text(&out.stdout), "under tcg\n");
    assert_eq!(
        stderr.matches("security boundary").count(),
        1,
        "the TCG warning, once: {stderr}"
    );
    assert!(stderr.contains("require_kvm = true"), "{stderr}");

    let strict = ward.config_with(
        "strict.toml",
        "[hypervisor]\nbackend = \"qemu\"\naccel = \"tcg\"\nrequire_kvm = true",
    );
    let out = ward.run_with_config(&strict, &["run", "--bundle", bundle, "t2"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "require_kvm let a TCG VM start");
    assert!(
        stderr.contains("ward: ") && stderr.contains("require_kvm = true forbids TCG"),
        "{stderr}"
    );
    assert!(
        !ward.root.join("t2").exists(),
        "the refused create left state"
    );
    let needle = ward.root.join("t2").display().to_string();
    assert!(pids_mentioning(&needle).is_empty(), "processes left");
}
