//! ward as containerd's runtime: containerd 1.6's runc shim (io.containerd.runc.v2) drives
//! it as it drives runc (see tests/contracts/containerd-1.6-runc.log), through `ctr run
//! --runc-binary`. Each test starts a private containerd (its own root, state, socket and
//! namespace) whose environment carries WARD_CONFIG to the shim and so to ward.

use std::time::Duration;

use ward_e2e::engines::{assert_sandbox_gone, ward_processes_mentioning, Containerd};
use ward_e2e::{text, Ward};

fn setup() -> (Ward, Containerd) {
    let ward = Ward::new();
    let containerd = Containerd::with_ward(&ward);
    (ward, containerd)
}

/// Nothing of container `id` is left: no task, no container, no state in the runtime
/// root, no QEMU, vsock device or relay naming it.
fn assert_gone(containerd: &Containerd, id: &str) {
    let tasks = containerd.ids("task");
    assert!(tasks.is_empty(), "ctr task ls: {tasks:?}");
    let containers = containerd.ids("container");
    assert!(containers.is_empty(), "ctr c ls: {containers:?}");
    let state = containerd.runtime_root().join(id);
    assert!(
        !state.exists(),
        "ward's state of {id} remains: {}",
        state.display()
    );
    let dir = state.to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = ward_processes_mentioning(&[&dir]);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes of removed container {id} remain: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_sandbox_gone(&containerd.runtime_root(), id);
}

#[test]
fn run_rm_echo_prints_hi_and_leaves_nothing() {
    let (_ward, containerd) = setup();
    let out = containerd.run(&["--rm"], "echo1", &["echo", "hi"]);
    assert!(out.status.success(), "ctr run: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n", "stderr: {}", text(&out.stderr));
    assert_gone(&containerd, "echo1");
}

#[test]
fn run_propagates_the_exit_code() {
    let (_ward, containerd) = setup();
    let out = containerd.run(&["--rm"], "exit7", &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_gone(&containerd, "exit7");
}

#[test]
fn detached_exec_ps_pause_resume_kill_delete() {
    let (_ward, containerd) = setup();
    let id = "sleeper";
    let out = containerd.run(&["--detach"], id, &["sleep", "1000"]);
    assert!(out.status.success(), "ctr run -d: {}", text(&out.stderr));
    containerd.wait_task(id, "RUNNING", Duration::from_secs(30));

    let version = containerd.ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        id,
        "cat",
        "/proc/version",
    ]);
    assert!(version.contains("-ward"), "guest kernel: {version}");
    let host = text(
        &std::process::Command::new("uname")
            .arg("-r")
            .output()
            .expect("uname")
            .stdout,
    )
    .trim()
    .to_string();
    assert!(
        !version.contains(&host),
        "the task sees the host kernel {host}: {version}"
    );

    // `ctr task ps` is the runtime's `ps --format json`: the task's processes, one at least.
    let ps = containerd.ok(&["task", "ps", id]);
    let rows: Vec<&str> = ps
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!rows.is_empty(), "ctr task ps {id}: {ps}");

    containerd.ok(&["task", "pause", id]);
    containerd.wait_task(id, "PAUSED", Duration::from_secs(10));
    containerd.ok(&["task", "resume", id]);
    containerd.wait_task(id, "RUNNING", Duration::from_secs(10));
    let awake = containerd.ok(&["task", "exec", "--exec-id", "e2", id, "echo", "awake"]);
    assert_eq!(awake, "awake\n");

    containerd.ok(&["task", "kill", "--signal", "SIGKILL", id]);
    containerd.wait_task(id, "STOPPED", Duration::from_secs(20));
    let out = containerd.ctr(&["task", "delete", id]);
    assert!(
        out.status.success(),
        "ctr task delete: {}",
        text(&out.stderr)
    );
    containerd.ok(&["container", "rm", id]);
    assert_gone(&containerd, id);
}

/// Kubernetes' IDs (64 hex digits) under containerd's k8s.io runtime root, through the runc
/// shim: no socket path ward builds depends on the ID's length or the root's depth.
#[test]
fn k8s_io_root_with_64_hex_ids() {
    let (_ward, mut containerd) = setup();
    containerd.use_namespace("k8s.io");
    assert_eq!(
        containerd.runtime_root(),
        std::path::Path::new("/run/containerd/runc/k8s.io")
    );
    let id = format!("{:08x}{:056x}", std::process::id(), 0xfeed_u64);
    assert_eq!(id.len(), 64);
    let out = containerd.run(&["--rm"], &id, &["sh", "-c", "echo long-id; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "long-id\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_gone(&containerd, &id);

    let out = containerd.run(&["--detach"], &id, &["sleep", "1000"]);
    assert!(out.status.success(), "ctr run -d: {}", text(&out.stderr));
    containerd.wait_task(&id, "RUNNING", Duration::from_secs(30));
    let said = containerd.ok(&["task", "exec", "--exec-id", "e1", &id, "echo", "exec-ok"]);
    assert_eq!(said, "exec-ok\n");
    containerd.ok(&["task", "kill", "--signal", "SIGKILL", &id]);
    containerd.wait_task(&id, "STOPPED", Duration::from_secs(30));
    containerd.ok(&["task", "delete", &id]);
    containerd.ok(&["container", "rm", &id]);
    assert_gone(&containerd, &id);
}
