//! The qemu backend with `accel = "kvm"` end to end: run, exec, kill, delete.

use std::path::Path;

use ward_e2e::{pids_mentioning, text, Ward};

use super::{exec, kill_and_delete, require_hardware_kvm, start_sleeper};

fn qemu_kvm_config(ward: &Ward) -> std::path::PathBuf {
    ward.config_with(
        "qemu-kvm.toml",
        "[hypervisor]\nbackend = \"qemu\"\naccel = \"kvm\"\nrequire_kvm = true",
    )
}

#[test]
fn qemu_kvm_run_prints_and_exits_with_the_containers_code() {
    require_hardware_kvm();
    let ward = Ward::new();
    let config = qemu_kvm_config(&ward);
    let bundle = ward.bundle("qk", &["sh", "-c", "echo hello from qemu-kvm; exit 7"]);
    let out = ward.run_with_config(
        &config,
        &["run", "--bundle", bundle.to_str().unwrap(), "qk"],
    );
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from qemu-kvm\n");
    assert!(!ward.root.join("qk").exists(), "run left its state behind");
}

#[test]
fn qemu_kvm_exec_kill_and_delete() {
    require_hardware_kvm();
    let ward = Ward::new();
    let config = qemu_kvm_config(&ward);
    start_sleeper(&ward, &config, "qs");
    // QEMU runs with KVM, not TCG.
    let needle = ward_e2e::engines::sandbox_dir(&ward.root, "qs")
        .display()
        .to_string();
    let qemu_args: Vec<String> = pids_mentioning(&needle)
        .into_iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| text(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains("qemu-system"))
        .collect();
    assert_eq!(
        qemu_args.len(),
        1,
        "one QEMU for the container: {qemu_args:?}"
    );
    assert!(
        qemu_args[0].contains("-accel kvm"),
        "QEMU is not on KVM: {}",
        qemu_args[0]
    );
    let (code, out, err) = exec(&ward, &config, "qs", &["sh", "-c", "echo in-qemu; exit 5"]);
    assert_eq!(code, Some(5), "exec: {err}");
    assert_eq!(out, "in-qemu\n");
    kill_and_delete(&ward, Path::new(&config), "qs");
}
