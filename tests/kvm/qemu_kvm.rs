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
    let mut command = ward.command();
    command
        .env("WARD_CONFIG", &config)
        .args(["run", "--bundle", bundle.to_str().unwrap(), "qk"]);
    let out = ward_e2e::output_within(&mut command, super::COMMAND_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "ward run qk did not finish within {} s\n{}",
            super::COMMAND_TIMEOUT.as_secs(),
            super::hang_report(&ward, "qk")
        )
    });
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

/// A Kubernetes pod on qemu with KVM: its VM boots with CPU and memory slots (q35), and
/// a container that joins with a CPU limit gets its vCPUs through real ACPI CPU hotplug
/// (the guest sees a hypervisor, so it counts QEMU's unplugged CPU slots), its memory
/// through a DIMM; both go when it is deleted.
#[test]
fn qemu_kvm_pod_member_hotplugs_vcpus_and_memory() {
    require_hardware_kvm();
    let ward = Ward::new();
    let base = std::fs::read_to_string(qemu_kvm_config(&ward)).expect("configuration");
    let config = ward.dir.path().join("qemu-kvm-pod.toml");
    std::fs::write(
        &config,
        base.replace("[guest]\n", "[guest]\nmax_vcpus = 4\n"),
    )
    .unwrap();
    let annotate = |bundle: &Path, typ: &str, resources: Option<serde_json::Value>| {
        let path = bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        spec["annotations"] = serde_json::json!({
            "io.kubernetes.cri.container-type": typ,
            "io.kubernetes.cri.sandbox-id": "kpod",
        });
        if let Some(resources) = resources {
            spec["linux"]["resources"] = resources;
        }
        std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    };
    let sandbox = ward.bundle("kpod", &["sleep", "100000"]);
    annotate(&sandbox, "sandbox", None);
    super::start_bundle(&ward, &config, "kpod", &sandbox);
    let size = || {
        let (code, out, err) = exec(
            &ward,
            &config,
            "kpod",
            &["sh", "-c", "nproc; grep MemTotal /proc/meminfo"],
        );
        assert_eq!(code, Some(0), "exec: {err}");
        out
    };
    let before = size();
    assert!(before.starts_with("1\n"), "{before}");
    let member = ward.bundle("kmember", &["sleep", "100000"]);
    annotate(
        &member,
        "container",
        Some(
            serde_json::json!({"cpu": {"quota": 200000, "period": 100000},
                                "memory": {"limit": 128 * 1024 * 1024}}),
        ),
    );
    super::start_bundle(&ward, &config, "kmember", &member);
    let after = size();
    assert!(
        after.starts_with("3\n"),
        "two vCPUs hot-added: {before} -> {after}"
    );
    let (code, online, _) = exec(
        &ward,
        &config,
        "kpod",
        &["cat", "/sys/devices/system/cpu/present"],
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        online.trim(),
        "0-2",
        "real hotplug: the CPUs are present only now"
    );
    kill_and_delete(&ward, &config, "kmember");
    let shrunk = size();
    assert!(
        shrunk.starts_with("1\n"),
        "the member's vCPUs went with it: {shrunk}"
    );
    kill_and_delete(&ward, &config, "kpod");
}
