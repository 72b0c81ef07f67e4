//! Confinement of the host processes of a QEMU VM (the backend this host runs, under TCG),
//! checked from /proc while a container runs (issue 14): QEMU under its own seccomp filter
//! (`-sandbox`), vhost-device-vsock without any capability, both with no_new_privs; and the
//! container still runs and execs.

use ward_e2e::{sandbox_processes, status_fields, text, Ward};

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
