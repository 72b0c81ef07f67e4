//! A container's life through the `ward` binary, in a real microVM.

use std::time::Duration;

use ward_e2e::{alive, mounts_mentioning, pids_mentioning, text, Ward};

#[test]
fn run_echo_prints_from_the_guest() {
    let ward = Ward::new();
    let bundle = ward.bundle("echo", &["echo", "hello from ward"]);
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "echo1"]);
    assert!(
        out.status.success(),
        "ward run failed: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "hello from ward\n");
    // run deletes the container when it exits.
    assert!(!ward.root.join("echo1").exists());
}

#[test]
fn run_propagates_the_exit_code_and_stderr() {
    let ward = Ward::new();
    let bundle = ward.bundle("exit3", &["sh", "-c", "echo to-stderr >&2; exit 3"]);
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "exit3"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn kill_stops_a_sleeping_container_and_delete_leaves_nothing() {
    let ward = Ward::new();
    let bundle = ward.bundle("sleep", &["sleep", "1000"]);
    let pid_file = ward.dir.path().join("sleep.pid");
    let out = ward.run_detached(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "sleeper",
    ]);
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    let state = ward.state("sleeper");
    assert_eq!(state["status"], "created");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(state["pid"], pid);
    assert!(alive(pid));

    let out = ward.run(&["start", "sleeper"]);
    assert!(out.status.success(), "start: {}", text(&out.stderr));
    assert_eq!(ward.state("sleeper")["status"], "running");

    // A running container is not deleted without --force.
    let out = ward.run(&["delete", "sleeper"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not stopped"),
        "{}",
        text(&out.stderr)
    );

    // Everything this container's VM runs on the host mentions its sandbox directory.
    let container_dir = ward.root.join("sleeper");
    let sandbox_dir = ward_e2e::engines::sandbox_dir(&ward.root, "sleeper");
    let needle = sandbox_dir.to_str().unwrap();
    let host_pids = pids_mentioning(needle);
    assert!(
        host_pids.len() >= 2,
        "expected the VMM and its helper, found {host_pids:?}"
    );

    let out = ward.run(&["kill", "sleeper", "SIGTERM"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    let state = ward.wait_status("sleeper", "stopped", Duration::from_secs(60));
    assert_eq!(state["pid"], 0);
    // The relay exits with the guest process's status: 128 + SIGTERM.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the relay outlived its process");

    let out = ward.run(&["delete", "sleeper"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    for host_pid in host_pids {
        assert!(!alive(host_pid), "process {host_pid} survived delete");
    }
    assert!(pids_mentioning(needle).is_empty());
    assert!(mounts_mentioning(needle).is_empty());
    assert!(mounts_mentioning(bundle.to_str().unwrap()).is_empty());
    assert!(!container_dir.exists(), "the state is gone");
    assert!(!sandbox_dir.exists(), "sockets, logs and shares are gone");
    let out = ward.run(&["state", "sleeper"]);
    assert!(!out.status.success());
}

#[test]
fn kill_accepts_runc_signal_spellings_and_defaults_to_term() {
    let ward = Ward::new();
    ward.start("sleeper2", &["sleep", "1000"]);
    assert_eq!(ward.state("sleeper2")["status"], "running");
    let out = ward.run(&["kill", "sleeper2", "NOSUCHSIG"]);
    assert!(!out.status.success());
    let out = ward.run(&["kill", "sleeper2", "0"]);
    assert!(out.status.success(), "signal 0: {}", text(&out.stderr));
    let out = ward.run(&["kill", "sleeper2"]);
    assert!(
        out.status.success(),
        "default signal: {}",
        text(&out.stderr)
    );
    ward.wait_status("sleeper2", "stopped", Duration::from_secs(60));
    let out = ward.run(&["kill", "sleeper2", "KILL"]);
    assert!(
        !out.status.success(),
        "killing a stopped container is an error"
    );
    let out = ward.run(&["delete", "sleeper2"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
}
