//! Confinement of the host processes of a QEMU VM (the backend this host runs, under TCG),
//! checked from /proc while a container runs (issue 14): QEMU under its own seccomp filter
//! (`-sandbox`), vhost-device-vsock without any capability, both with no_new_privs; and the
//! container still runs and execs.

use std::collections::BTreeMap;

use ward_e2e::{pids_mentioning, text, Ward};

/// `Key:\tvalue` lines of a /proc status file.
fn status_fields(path: &str) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The host processes of sandbox `id` whose program (argv[0]) ends with `program`.
fn sandbox_processes(ward: &Ward, id: &str, program: &str) -> Vec<i64> {
    let needle = ward_e2e::engines::sandbox_dir(&ward.root, id)
        .display()
        .to_string();
    pids_mentioning(&needle)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                text(&raw)
                    .split('\0')
                    .next()
                    .is_some_and(|argv0| argv0.ends_with(program))
            })
        })
        .collect()
}

#[test]
fn qemu_and_its_vsock_helper_run_confined() {
    let ward = Ward::new();
    ward.start("conf", &["sleep", "1000"]);

    let qemus = sandbox_processes(&ward, "conf", "qemu-system-x86_64");
    assert_eq!(qemus.len(), 1, "one QEMU for the container: {qemus:?}");
    let qemu = qemus[0];
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{qemu}/task"))
        .expect("QEMU's threads")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!threads.is_empty());
    for tid in &threads {
        let status = status_fields(&format!("/proc/{qemu}/task/{tid}/status"));
        assert_eq!(
            status.get("Seccomp").map(String::as_str),
            Some("2"),
            "QEMU thread {tid} is not under seccomp: {status:?}"
        );
        assert_eq!(
            status.get("NoNewPrivs").map(String::as_str),
            Some("1"),
            "QEMU thread {tid} lacks no_new_privs"
        );
    }

    let helpers = sandbox_processes(&ward, "conf", "vhost-device-vsock");
    assert_eq!(helpers.len(), 1, "one vhost-device-vsock: {helpers:?}");
    let status = status_fields(&format!("/proc/{}/status", helpers[0]));
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status.get(set).map(String::as_str),
            Some("0000000000000000"),
            "vhost-device-vsock's {set}: {status:?}"
        );
    }
    assert_eq!(status.get("NoNewPrivs").map(String::as_str), Some("1"));

    // Confined, and still working: an exec's output comes back through vsock.
    let out = ward.run(&["exec", "conf", "sh", "-c", "echo confined; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "exec: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "confined\n");

    let out = ward.run(&["kill", "conf", "KILL"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    ward.wait_status("conf", "stopped", std::time::Duration::from_secs(60));
    let out = ward.run(&["delete", "conf"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    ward.assert_nothing_left("conf");
}
