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
    let out = ward
        .command()
        .env("WARD_HYPERVISOR", "builtin")
        .args(["run", "--bundle", bundle.to_str().unwrap(), "bi"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running ward");
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
