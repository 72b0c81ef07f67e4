//! The builtin backend (ward-vmm) end to end: the container's output and exit code, and
//! the lifecycle engines drive (run --detach, exec, kill, delete).

use ward_e2e::{text, Ward};

use super::{exec, kill_and_delete, require_hardware_kvm, require_vmm, start_sleeper};

#[test]
fn builtin_run_prints_and_exits_with_the_containers_code() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let bundle = ward.bundle("bi", &["sh", "-c", "echo hello from ward-vmm; exit 3"]);
    let mut command = ward.command();
    command.env("WARD_HYPERVISOR", "builtin").args([
        "run",
        "--bundle",
        bundle.to_str().unwrap(),
        "bi",
    ]);
    let out = ward_e2e::output_within(&mut command, super::COMMAND_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "ward run bi did not finish within {} s\n{}",
            super::COMMAND_TIMEOUT.as_secs(),
            super::hang_report(&ward, "bi")
        )
    });
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from ward-vmm\n");
    assert!(
        !text(&out.stderr).contains("TCG"),
        "a KVM VM must not be reported as TCG: {}",
        text(&out.stderr)
    );
    assert!(!ward.root.join("bi").exists(), "run left its state behind");
}

#[test]
fn builtin_exec_kill_and_delete() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let config = ward.config_with("builtin.toml", "[hypervisor]\nbackend = \"builtin\"");
    start_sleeper(&ward, &config, "bl");
    let vm = &ward.state("bl");
    eprintln!("state: {vm}");
    let (code, out, err) = exec(&ward, &config, "bl", &["sh", "-c", "echo in-vmm; exit 4"]);
    assert_eq!(code, Some(4), "exec: {err}");
    assert_eq!(out, "in-vmm\n");
    // The VM is ward-vmm's: its virtio-fs shares are what the guest mounted.
    let (code, mounts, err) = exec(&ward, &config, "bl", &["cat", "/proc/mounts"]);
    assert_eq!(code, Some(0), "exec: {err}");
    assert!(mounts.contains("virtiofs"), "{mounts}");
    kill_and_delete(&ward, &config, "bl");
}

/// A pod on ward-vmm: a second container joins the running VM of the first, and its
/// rootfs, bind-mounted into the sandbox's shared directory after the VM booted, reaches
/// the guest through virtiofsd (whose own mount namespace receives it by propagation).
#[test]
fn builtin_pod_member_joins_the_running_vm_over_virtiofs() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let config = ward.config_with("builtin.toml", "[hypervisor]\nbackend = \"builtin\"");
    start_sleeper(&ward, &config, "pod");
    let (code, infra_boot, err) = exec(
        &ward,
        &config,
        "pod",
        &["cat", "/proc/sys/kernel/random/boot_id"],
    );
    assert_eq!(code, Some(0), "exec: {err}");

    let bundle = ward.bundle(
        "member",
        &[
            "sh",
            "-c",
            "cat /proc/sys/kernel/random/boot_id /member-marker; grep -c virtiofs /proc/mounts",
        ],
    );
    std::fs::write(
        bundle.join("rootfs/member-marker"),
        "joined-over-virtiofs\n",
    )
    .unwrap();
    let config_json = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_json).unwrap()).unwrap();
    spec["annotations"] = serde_json::json!({
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.SandboxID": "pod",
    });
    std::fs::write(&config_json, serde_json::to_vec(&spec).unwrap()).unwrap();
    let mut command = ward.command();
    command.env("WARD_CONFIG", &config).args([
        "run",
        "--bundle",
        bundle.to_str().unwrap(),
        "member",
    ]);
    eprintln!("[kvm] run member");
    let out = ward_e2e::output_within(&mut command, super::COMMAND_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "ward run member did not finish within {} s\n{}",
            super::COMMAND_TIMEOUT.as_secs(),
            super::hang_report(&ward, "pod")
        )
    });
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with(&infra_boot),
        "one guest kernel: {said} vs {infra_boot}"
    );
    assert!(said.contains("joined-over-virtiofs"), "{said}");
    kill_and_delete(&ward, &config, "pod");
}
