//! Confinement of the host processes of a VM, checked from /proc while a container runs
//! (issue 14): every ward-vmm thread under its seccomp filter with no_new_privs, and the
//! container still running and exec'ing under them.

use ward_e2e::{sandbox_processes, status_fields, Ward};

use super::{exec, kill_and_delete, require_hardware_kvm, require_vmm, start_sleeper};

#[test]
fn builtin_every_vmm_thread_runs_under_seccomp_with_no_new_privs() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let config = ward.config_with("builtin.toml", "[hypervisor]\nbackend = \"builtin\"");
    start_sleeper(&ward, &config, "sc");
    // An exec first: it activates nothing new, but proves the filters let the agent's
    // vsock streams through before the threads are inspected.
    let (code, out, err) = exec(&ward, &config, "sc", &["sh", "-c", "echo confined; exit 6"]);
    assert_eq!(code, Some(6), "exec under seccomp: {err}");
    assert_eq!(out, "confined\n");

    let vmms = sandbox_processes(&ward, "sc", "ward-vmm");
    assert_eq!(vmms.len(), 1, "one ward-vmm for the sandbox: {vmms:?}");
    let pid = vmms[0];
    let mut names = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("ward-vmm's threads") {
        let tid = entry.expect("a thread entry").file_name();
        let tid = tid.to_string_lossy();
        let status = status_fields(&format!("/proc/{pid}/task/{tid}/status"));
        if status.is_empty() {
            // Ended since the listing: an API connection's thread lives as long as the
            // connection (ward's own calls open and close them).
            continue;
        }
        let name = status.get("Name").cloned().unwrap_or_default();
        assert_eq!(
            status.get("Seccomp").map(String::as_str),
            Some("2"),
            "ward-vmm thread {tid} ({name}) is not under a seccomp filter: {status:?}"
        );
        assert_eq!(
            status.get("NoNewPrivs").map(String::as_str),
            Some("1"),
            "ward-vmm thread {tid} ({name}) lacks no_new_privs"
        );
        names.push(name);
    }
    // Every class is there: main, API, vCPU and device workers.
    for class in ["ward-vmm", "api", "vcpu0", "virtio-vsock", "virtio-fs"] {
        assert!(
            names.iter().any(|n| n == class),
            "no {class} thread among {names:?}"
        );
    }

    // No capabilities, and none to regain: ward-vmm runs as root only for file ownership.
    let status = status_fields(&format!("/proc/{pid}/status"));
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status.get(set).map(String::as_str),
            Some("0000000000000000"),
            "ward-vmm's {set}: {status:?}"
        );
    }

    // virtiofsd: it enters its own mount namespace and forks the process that serves the
    // share, which runs under virtiofsd's seccomp filter; both have no_new_privs and lack
    // MKNOD and SETFCAP (the parent, which only waits, keeps no capability at all).
    let ours = std::fs::read_link("/proc/self/ns/mnt").expect("our mount namespace");
    let fsds = sandbox_processes(&ward, "sc", "virtiofsd");
    assert!(!fsds.is_empty(), "no virtiofsd for the sandbox");
    let sandboxed: Vec<i64> = fsds
        .iter()
        .copied()
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns != ours))
        .collect();
    assert!(
        !sandboxed.is_empty(),
        "no virtiofsd in its own mount namespace: {fsds:?}"
    );
    let mut servers = 0;
    for pid in sandboxed {
        let status = status_fields(&format!("/proc/{pid}/status"));
        let eff = u64::from_str_radix(status.get("CapEff").map(String::as_str).unwrap_or(""), 16)
            .expect("virtiofsd's CapEff");
        const CAP_MKNOD: u32 = 27;
        const CAP_SETFCAP: u32 = 31;
        const CAP_SYS_ADMIN: u32 = 21;
        for cap in [CAP_MKNOD, CAP_SETFCAP, CAP_SYS_ADMIN] {
            assert_eq!(
                eff & (1 << cap),
                0,
                "virtiofsd {pid} has capability {cap}: {eff:#x}"
            );
        }
        assert_eq!(
            status.get("NoNewPrivs").map(String::as_str),
            Some("1"),
            "virtiofsd {pid}"
        );
        // The serving process is the one virtiofsd forked; its parent only waits.
        let parent: i64 = status
            .get("PPid")
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        if fsds.contains(&parent) {
            servers += 1;
            assert_eq!(
                status.get("Seccomp").map(String::as_str),
                Some("2"),
                "virtiofsd {pid}"
            );
        }
    }
    assert!(
        servers > 0,
        "no serving virtiofsd (one forked by virtiofsd): {fsds:?}"
    );

    // Still working after the inspection: a second exec, with output through vsock.
    let (code, out, err) = exec(&ward, &config, "sc", &["cat", "/proc/self/status"]);
    assert_eq!(code, Some(0), "second exec: {err}");
    assert!(out.contains("Name:\tcat"), "{out}");
    kill_and_delete(&ward, &config, "sc");
}
