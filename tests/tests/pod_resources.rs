//! Per-container resources in a pod (Kata's addResources): a Kubernetes pod's sandbox VM
//! boots with room to grow (q35 with CPU and memory slots under qemu), a container that
//! joins it with a CPU limit brings ceil(quota/period) vCPUs and its memory limit, and
//! takes them away when it is deleted. Driven through the runc CLI with containerd's CRI
//! annotations, as containerd's runc shim would.

use std::path::Path;

use ward_e2e::{text, Ward};

fn annotate(bundle: &Path, annotations: serde_json::Value, resources: Option<serde_json::Value>) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["annotations"] = annotations;
    if let Some(resources) = resources {
        spec["linux"]["resources"] = resources;
    }
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

/// (online CPUs, MemTotal KiB) in the sandbox container.
fn guest_size(ward: &Ward, config: &Path) -> (u32, u64) {
    let out = ward
        .command()
        .env("WARD_CONFIG", config)
        .args([
            "exec",
            "pod",
            "sh",
            "-c",
            "nproc; grep MemTotal /proc/meminfo",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ward exec");
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    let said = text(&out.stdout);
    let mut lines = said.lines();
    let cpus = lines.next().and_then(|l| l.trim().parse().ok());
    let mem = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok());
    match (cpus, mem) {
        (Some(c), Some(m)) => (c, m),
        _ => panic!("unexpected output: {said}"),
    }
}

#[test]
fn a_cpu_and_memory_limited_container_grows_the_pods_vm_and_shrinks_it_on_delete() {
    let ward = Ward::new();
    // Four vCPUs of room whatever this host has: TCG runs more vCPUs than host CPUs.
    let base = std::fs::read_to_string(&ward.config).expect("test configuration");
    assert!(base.contains("[guest]\n"), "{base}");
    let config = ward.dir.path().join("pod.toml");
    std::fs::write(
        &config,
        base.replace("[guest]\n", "[guest]\nmax_vcpus = 4\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        ward.command()
            .env("WARD_CONFIG", &config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(ward.dir.path().join("err")).unwrap())
            .status()
            .expect("running ward")
    };
    let err = || std::fs::read_to_string(ward.dir.path().join("err")).unwrap_or_default();

    let sandbox = ward.bundle("pod", &["sleep", "100000"]);
    annotate(
        &sandbox,
        serde_json::json!({
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": "pod",
        }),
        None,
    );
    assert!(
        run(&[
            "run",
            "--detach",
            "--bundle",
            sandbox.to_str().unwrap(),
            "pod"
        ])
        .success(),
        "{}",
        err()
    );
    let (cpus0, mem0) = guest_size(&ward, &config);
    assert_eq!(cpus0, 1, "the pod boots with the default vCPU");

    let member = ward.bundle("limited", &["sleep", "100000"]);
    annotate(
        &member,
        serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "pod",
        }),
        Some(serde_json::json!({
            "cpu": {"quota": 150000, "period": 100000},
            "memory": {"limit": 256 * 1024 * 1024},
        })),
    );
    let started = std::time::Instant::now();
    assert!(
        run(&[
            "run",
            "--detach",
            "--bundle",
            member.to_str().unwrap(),
            "limited"
        ])
        .success(),
        "{}",
        err()
    );
    eprintln!(
        "member with 2 vCPUs and 256 MiB joined in {:?}",
        started.elapsed()
    );
    let (cpus1, mem1) = guest_size(&ward, &config);
    assert_eq!(cpus1, cpus0 + 2, "1.5 CPUs of quota bring 2 vCPUs");
    let grown = mem1.saturating_sub(mem0);
    assert!(
        (256 * 1024 - 8 * 1024..=256 * 1024).contains(&grown),
        "MemTotal grew by {grown} KiB ({mem0} -> {mem1})"
    );

    // `ward update` resizes the VM as well as the container's cgroup.
    assert!(
        run(&[
            "update",
            "--cpu-quota",
            "300000",
            "--cpu-period",
            "100000",
            "limited"
        ])
        .success(),
        "{}",
        err()
    );
    let (cpus_updated, _) = guest_size(&ward, &config);
    assert_eq!(cpus_updated, cpus0 + 3, "3 CPUs of quota after the update");

    assert!(run(&["kill", "limited", "KILL"]).success(), "{}", err());
    ward.wait_status("limited", "stopped", std::time::Duration::from_secs(60));
    assert!(run(&["delete", "limited"]).success(), "{}", err());
    let (cpus2, _) = guest_size(&ward, &config);
    assert_eq!(cpus2, cpus0, "deleting the container takes its vCPUs away");

    assert!(run(&["kill", "pod", "KILL"]).success(), "{}", err());
    ward.wait_status("pod", "stopped", std::time::Duration::from_secs(60));
    assert!(run(&["delete", "pod"]).success(), "{}", err());
    ward.assert_nothing_left("pod");
}
