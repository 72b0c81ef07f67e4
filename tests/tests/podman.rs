//! ward as podman's OCI runtime: podman 4.3 drives it through conmon exactly as it drives
//! runc (see tests/contracts/podman-4.3-runc.log), and every container is a microVM.
//!
//! podman passes no `--root` to the runtime, so ward keeps these containers' state in its
//! default root, /run/ward; the tests check that nothing of a removed container is left
//! there or among the host's processes.

use std::path::Path;
use std::time::{Duration, Instant};

use ward_e2e::engines::{assert_sandbox_gone, ward_processes_mentioning, Podman, Tmux, IMAGE};
use ward_e2e::{text, Ward};

/// ward's state root when the caller passes no --root (runtime/src/cli/mod.rs).
const WARD_DEFAULT_ROOT: &str = "/run/ward";

fn setup() -> (Ward, Podman) {
    let ward = Ward::new();
    let podman = Podman::with_ward(&ward);
    (ward, podman)
}

/// A container name unique to this test process.
fn name(base: &str) -> String {
    format!("we{}-{base}", std::process::id())
}

fn host_release() -> String {
    text(
        &std::process::Command::new("uname")
            .arg("-r")
            .output()
            .expect("uname")
            .stdout,
    )
    .trim()
    .to_string()
}

/// Asserts that nothing of container `id` (podman's full ID) is left: no QEMU, vsock
/// device, relay or conmon naming it, no state in ward's root, and podman knows it no more.
fn assert_gone(podman: &Podman, ward: &Ward, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = ward_processes_mentioning(&[id]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of removed container {id} remain: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !Path::new(WARD_DEFAULT_ROOT).join(id).exists(),
        "ward's state of removed container {id} remains in {WARD_DEFAULT_ROOT}"
    );
    let list = std::process::Command::new(&ward.bin)
        .env("WARD_CONFIG", &ward.config)
        .args(["--root", WARD_DEFAULT_ROOT, "list", "--quiet"])
        .output()
        .expect("ward list");
    assert!(
        list.status.success(),
        "ward --root {WARD_DEFAULT_ROOT} list: {}",
        text(&list.stderr)
    );
    assert!(
        !text(&list.stdout).contains(id),
        "ward list --root {WARD_DEFAULT_ROOT} still shows {id}: {}",
        text(&list.stdout)
    );
    let all = podman.ok(&["ps", "--all", "--no-trunc", "--format", "{{.ID}}"]);
    assert!(!all.contains(id), "podman still lists {id}: {all}");
    assert_sandbox_gone(Path::new(WARD_DEFAULT_ROOT), id);
}

/// The QEMU processes of running VMs named after `sandbox` (QEMU's `-name guest=ID`).
fn vms_of(sandbox: &str) -> usize {
    ward_processes_mentioning(&[&format!("guest={sandbox}")])
        .iter()
        .filter(|p| p.contains("qemu-system"))
        .count()
}

/// A podman pod is one microVM: the infra container is its sandbox, and the pod's
/// containers join that VM (one guest kernel: one boot ID) and share its hostname and
/// network namespace (a server on localhost in one answers the other), each with its own
/// root filesystem and mount namespace. `podman pod rm` leaves no VM behind.
#[test]
fn a_pod_is_one_vm_with_shared_localhost_and_hostname() {
    let (ward, podman) = setup();
    let pod = name("pod");
    podman.ok(&["pod", "create", "--name", &pod]);
    let server = name("pod-server");
    let client = name("pod-client");
    let serve = "mkdir -p /tmp/www && echo pod-page > /tmp/www/index.html && \
                 echo only-in-server > /marker && exec httpd -f -p 8080 -h /tmp/www";
    podman.ok(&[
        "run", "-d", "--pod", &pod, "--name", &server, IMAGE, "sh", "-c", serve,
    ]);
    let infra = podman.ok(&["pod", "inspect", "--format", "{{.InfraContainerID}}", &pod]);
    assert_eq!(
        vms_of(&infra),
        1,
        "the pod's VM is named after its infra container"
    );

    let started = Instant::now();
    let fetch = "for i in 1 2 3 4 5 6 7 8 9 10; do \
                 wget -q -O - http://127.0.0.1:8080/ && break; sleep 0.5; done; \
                 echo host=$(hostname); echo boot=$(cat /proc/sys/kernel/random/boot_id); \
                 echo net=$(readlink /proc/self/ns/net); echo mnt=$(readlink /proc/self/ns/mnt); \
                 test -e /marker && echo sees-marker; true";
    let out = podman.ok(&[
        "run", "--rm", "--pod", &pod, "--name", &client, IMAGE, "sh", "-c", fetch,
    ]);
    eprintln!(
        "second container of the pod: run to exit in {:?}",
        started.elapsed()
    );
    assert!(
        out.contains("pod-page"),
        "localhost reaches the other container: {out}"
    );
    assert!(
        !out.contains("sees-marker"),
        "each container has its own rootfs: {out}"
    );
    assert_eq!(vms_of(&infra), 1, "still one VM: {out}");

    let server_view = podman.ok(&[
        "exec",
        &server,
        "sh",
        "-c",
        "echo host=$(hostname); echo boot=$(cat /proc/sys/kernel/random/boot_id); \
         echo net=$(readlink /proc/self/ns/net); echo mnt=$(readlink /proc/self/ns/mnt)",
    ]);
    let field = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {text}"))
            .to_string()
    };
    for key in ["host", "boot", "net"] {
        assert_eq!(
            field(&out, key),
            field(&server_view, key),
            "{key}: client {out} server {server_view}"
        );
    }
    assert_ne!(
        field(&out, "mnt"),
        field(&server_view, "mnt"),
        "mount namespaces are each container's own"
    );
    assert_eq!(field(&server_view, "host"), pod, "the pod's hostname");

    podman.ok(&["pod", "rm", "--force", "--time", "0", &pod]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while vms_of(&infra) > 0 {
        assert!(
            Instant::now() < deadline,
            "the pod's VM outlived `podman pod rm`"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_sandbox_gone(Path::new(WARD_DEFAULT_ROOT), &infra);
    let _ = ward;
}

/// `podman run --rm` prints the guest's output and leaves nothing of its container.
#[test]
fn run_rm_echo_prints_hi() {
    let (ward, podman) = setup();
    let cidfile = ward.dir.path().join("cid");
    let out = podman.run(&[
        "run",
        "--rm",
        "--cidfile",
        cidfile.to_str().unwrap(),
        IMAGE,
        "echo",
        "hi",
    ]);
    assert!(out.status.success(), "podman run: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n", "stderr: {}", text(&out.stderr));
    let id = std::fs::read_to_string(&cidfile).expect("podman wrote the --cidfile");
    assert_gone(&podman, &ward, id.trim());
}

#[test]
fn run_propagates_the_exit_code() {
    let (_ward, podman) = setup();
    let out = podman.run(&["run", "--rm", IMAGE, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
}

#[test]
fn detached_exec_ps_pause_unpause_kill_rm() {
    let (ward, podman) = setup();
    let n = name("sleeper");
    let id = podman.ok(&["run", "-d", "--name", &n, IMAGE, "sleep", "1000"]);
    assert_eq!(id.len(), 64, "podman run -d prints the ID: {id}");

    // The container runs in the guest: its kernel is ward's, not the host's.
    let version = podman.ok(&["exec", &n, "cat", "/proc/version"]);
    assert!(version.contains("-ward"), "guest kernel: {version}");
    let host = host_release();
    assert!(
        !version.contains(&host),
        "the container sees the host kernel {host}: {version}"
    );

    let ps = podman.ok(&["ps", "--all", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        ps.lines().any(|l| l.starts_with(&format!("{n} Up"))),
        "podman ps: {ps}"
    );
    assert_eq!(podman.inspect(&n, "{{.State.Status}}"), "running");

    // podman's pid file names ward's relay on the host.
    let pid = podman.inspect(&n, "{{.State.Pid}}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        text(&cmdline).contains("relay"),
        "podman's PID {pid} is not ward's relay: {:?}",
        text(&cmdline)
    );

    podman.ok(&["pause", &n]);
    assert_eq!(podman.inspect(&n, "{{.State.Status}}"), "paused");
    let ps = podman.ok(&["ps", "--all", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains(&format!("{n} Paused")), "podman ps: {ps}");
    podman.ok(&["unpause", &n]);
    assert_eq!(podman.inspect(&n, "{{.State.Status}}"), "running");
    // Still serving after the pause.
    assert_eq!(podman.ok(&["exec", &n, "echo", "awake"]), "awake");

    podman.ok(&["kill", "--signal", "KILL", &n]);
    podman.wait_status(&n, "exited", Duration::from_secs(20));
    assert_eq!(podman.inspect(&n, "{{.State.ExitCode}}"), "137");
    podman.ok(&["rm", &n]);
    assert_gone(&podman, &ward, &id);
}

#[test]
fn stop_delivers_term_to_a_trapping_process() {
    let (ward, podman) = setup();
    let n = name("trap");
    let id = podman.ok(&[
        "run",
        "-d",
        "--name",
        &n,
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.2; done",
    ]);
    wait_logs(&podman, &n, "ready");
    let started = Instant::now();
    podman.ok(&["stop", "--time", "10", &n]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "stop waited {took:?}: the TERM did not reach the trap"
    );
    assert_eq!(podman.inspect(&n, "{{.State.ExitCode}}"), "0");
    let logs = podman.run(&["logs", &n]);
    assert!(
        text(&logs.stdout).contains("got TERM"),
        "podman logs: {} {}",
        text(&logs.stdout),
        text(&logs.stderr)
    );
    podman.ok(&["rm", &n]);
    assert_gone(&podman, &ward, &id);
}

#[test]
fn stop_kills_a_process_that_ignores_term_after_the_timeout() {
    let (ward, podman) = setup();
    let n = name("deaf");
    let id = podman.ok(&[
        "run",
        "-d",
        "--name",
        &n,
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; echo ready; while true; do sleep 0.2; done",
    ]);
    wait_logs(&podman, &n, "ready");
    let started = Instant::now();
    podman.ok(&["stop", "--time", "2", &n]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "stop returned after {took:?}, before its 2 s timeout: the process did not ignore TERM?"
    );
    assert!(took < Duration::from_secs(20), "stop took {took:?}");
    assert_eq!(podman.inspect(&n, "{{.State.ExitCode}}"), "137");
    podman.ok(&["rm", &n]);
    assert_gone(&podman, &ward, &id);
}

/// `podman run -it` through a real pseudo-terminal (tmux): what is typed is echoed by the
/// container's terminal and read by its shell; the terminal is a /dev/pts one of the
/// outer window's size.
#[test]
fn run_interactive_terminal() {
    let (_ward, podman) = setup();
    let n = name("tty");
    let line = format!(
        "{} run -it --rm --name {n} {IMAGE} sh; echo podman-exit=$?; sleep 600",
        podman.shell_line()
    );
    let tmux = Tmux::start(&n, 101, 33, &line);
    tmux.wait_for("# ", Duration::from_secs(60));
    tmux.type_line("echo typed-$((6*7))");
    let screen = tmux.wait_for("typed-42", Duration::from_secs(20));
    assert!(
        screen.contains("echo typed-$((6*7))"),
        "the terminal did not echo what was typed:\n{screen}"
    );
    // The marker is computed, so only the output line carries it, not the echoed input.
    tmux.type_line("echo res-$((1+1)) $(tty) $(stty size)");
    let screen = tmux.wait_for("res-2 ", Duration::from_secs(20));
    let result: Vec<&str> = screen
        .lines()
        .find(|l| l.starts_with("res-2 "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(
        result.get(1).is_some_and(|t| t.starts_with("/dev/pts/")),
        "tty inside is not a /dev/pts terminal:\n{screen}"
    );
    assert_eq!(
        result.get(2..4),
        Some(&["33", "101"][..]),
        "stty size inside is not the window's 33x101:\n{screen}"
    );
    tmux.type_line("exit");
    tmux.wait_for("podman-exit=0", Duration::from_secs(30));
}

/// Polls `podman logs` until it contains `needle`.
fn wait_logs(podman: &Podman, name: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = podman.run(&["logs", name]);
        if text(&logs.stdout).contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not log {needle:?}: {} {}",
            text(&logs.stdout),
            text(&logs.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A command the image does not have: podman's exit status is 127, as with runc, whose
/// `create` fails on the missing executable (podman maps that to 127, "command not
/// found"); the message names the command.
#[test]
fn run_of_a_missing_command_exits_127() {
    let (_ward, podman) = setup();
    let out = podman.run(&["run", "--rm", IMAGE, "/no-such-command"]);
    assert_eq!(
        out.status.code(),
        Some(127),
        "podman run of a missing command: stderr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("/no-such-command"),
        "the error names the command: {}",
        text(&out.stderr)
    );
}
