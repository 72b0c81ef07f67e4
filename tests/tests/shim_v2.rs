//! ward's own containerd shim (`containerd-shim-ward-v2`, runtime type
//! `io.containerd.ward.v2`) driven by a private containerd through `ctr`: the shim binary
//! is on containerd's PATH and WARD_CONFIG in its environment, as a real install has them.

use std::time::Duration;

use ward_e2e::engines::{
    assert_sandbox_gone, shim_processes, ward_processes_mentioning, Containerd, Tmux, IMAGE,
    WARD_SHIM_RUNTIME,
};
use ward_e2e::{text, Ward};

fn setup() -> (Ward, Containerd) {
    let ward = Ward::new();
    let containerd = Containerd::with_ward_shim(&ward);
    (ward, containerd)
}

/// Nothing of container `id` is left: no task, no container, no state in the shim's
/// root, no shim, QEMU or vsock device process.
fn assert_gone(containerd: &Containerd, id: &str) {
    let tasks = containerd.ids("task");
    assert!(tasks.is_empty(), "ctr task ls: {tasks:?}");
    let containers = containerd.ids("container");
    assert!(containers.is_empty(), "ctr c ls: {containers:?}");
    let state = containerd.shim_root().join(id);
    // After a shim dies, containerd runs its `delete` action in the background: the task
    // can be gone from `ctr task ls` before that action has removed the state.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while state.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the shim's state of {id} remains: {}",
            state.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = state.to_string_lossy().into_owned();
    loop {
        let mut left = ward_processes_mentioning(&[&dir]);
        left.extend(shim_processes(&containerd.namespace));
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes of removed container {id} remain: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_sandbox_gone(&containerd.shim_root(), id);
}

/// The value of `name` in `ctr task metrics` output (the cgroup v2 table).
fn metric(table: &str, name: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let mut cols = line.split_whitespace();
        (cols.next() == Some(name))
            .then(|| cols.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

#[test]
fn run_rm_echo_prints_and_leaves_nothing() {
    let (_ward, containerd) = setup();
    let out = containerd.run_shim(&["--rm"], "shim-echo", &["echo", "hello"]);
    assert!(out.status.success(), "ctr run: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_gone(&containerd, "shim-echo");

    let out = containerd.run_shim(
        &["--rm"],
        "shim-exit",
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).contains("err"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_gone(&containerd, "shim-exit");
}

#[test]
fn detached_exec_metrics_kill_delete() {
    let (_ward, containerd) = setup();
    let id = "shim-sleeper";
    let out = containerd.run_shim(&["--detach"], id, &["sleep", "1000"]);
    assert!(out.status.success(), "ctr run -d: {}", text(&out.stderr));
    containerd.wait_task(id, "RUNNING", Duration::from_secs(60));
    let shims: Vec<String> = shim_processes(&containerd.namespace)
        .into_iter()
        .filter(|p| p.contains(" containerd-shim: "))
        .collect();
    assert_eq!(shims.len(), 1, "one shim for the container: {shims:#?}");

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
    let out = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        id,
        "sh",
        "-c",
        "echo bye; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "bye\n");

    let ps = containerd.ok(&["task", "ps", id]);
    assert!(
        ps.lines().skip(1).any(|l| !l.trim().is_empty()),
        "ctr task ps: {ps}"
    );

    let table = containerd.ok(&["task", "metrics", id]);
    let memory = metric(&table, "memory.usage");
    assert!(memory.is_some_and(|m| m > 0), "ctr task metrics: {table}");
    assert!(
        metric(&table, "cpu.usage_usec").is_some_and(|c| c > 0),
        "ctr task metrics: {table}"
    );

    containerd.ok(&["task", "pause", id]);
    containerd.wait_task(id, "PAUSED", Duration::from_secs(20));
    containerd.ok(&["task", "resume", id]);
    containerd.wait_task(id, "RUNNING", Duration::from_secs(20));

    containerd.ok(&["task", "kill", "--signal", "SIGKILL", id]);
    containerd.wait_task(id, "STOPPED", Duration::from_secs(30));
    containerd.ok(&["task", "delete", id]);
    containerd.ok(&["container", "rm", id]);
    assert_gone(&containerd, id);
}

#[test]
fn stdin_reaches_the_process_and_its_end_closes_it() {
    let (_ward, containerd) = setup();
    let out =
        containerd.run_shim_with_stdin(&["--rm"], "shim-cat", &["cat"], b"line one\nline two\n");
    assert!(out.status.success(), "ctr run: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "line one\nline two\n");
    assert_gone(&containerd, "shim-cat");
}

/// The only shim process (not its watchers) serving the namespace.
fn shims(containerd: &Containerd) -> Vec<String> {
    shim_processes(&containerd.namespace)
        .into_iter()
        .filter(|p| p.contains(" containerd-shim: "))
        .collect()
}

/// Two containers that CRI would mark as one pod (a sandbox and a member naming it) are
/// served by one shim, which stays until the last of them is deleted.
#[test]
fn a_pod_has_one_shim() {
    let (_ward, containerd) = setup();
    let sandbox = "shim-pod";
    let member = "shim-pod-app";
    let out = containerd.run_shim(
        &[
            "--detach",
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
            "--annotation",
            &format!("io.kubernetes.cri.sandbox-id={sandbox}"),
        ],
        sandbox,
        &["sleep", "1000"],
    );
    assert!(
        out.status.success(),
        "ctr run -d {sandbox}: {}",
        text(&out.stderr)
    );
    let out = containerd.run_shim(
        &[
            "--detach",
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            &format!("io.kubernetes.cri.sandbox-id={sandbox}"),
        ],
        member,
        &["sleep", "1000"],
    );
    assert!(
        out.status.success(),
        "ctr run -d {member}: {}",
        text(&out.stderr)
    );
    containerd.wait_task(sandbox, "RUNNING", Duration::from_secs(60));
    containerd.wait_task(member, "RUNNING", Duration::from_secs(60));
    let serving = shims(&containerd);
    assert_eq!(serving.len(), 1, "one shim for the pod: {serving:#?}");
    // The shim's resident memory while it serves a pod of two, for the record.
    if let Some(pid) = serving[0]
        .split(|c: char| c == ':' || c.is_whitespace())
        .next()
    {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap_or("VmRSS: ?");
        eprintln!("the pod's shim (pid {pid}): {rss}");
    }
    // One VM for the pod: the member runs in its sandbox's.
    let vms = |id: &str| {
        ward_processes_mentioning(&[&format!("guest={id}")])
            .into_iter()
            .filter(|p| p.contains("qemu-system"))
            .count()
    };
    assert_eq!(
        (vms(sandbox), vms(member)),
        (1, 0),
        "QEMU processes of the pod"
    );
    let hi = containerd.ok(&["task", "exec", "--exec-id", "e1", member, "echo", "hi"]);
    assert_eq!(hi, "hi\n");

    containerd.ok(&["task", "kill", "--all", "--signal", "SIGKILL", member]);
    containerd.wait_task(member, "STOPPED", Duration::from_secs(30));
    containerd.ok(&["task", "delete", member]);
    containerd.ok(&["container", "rm", member]);
    assert_eq!(
        shims(&containerd),
        serving,
        "the pod's shim stays for the sandbox"
    );

    containerd.ok(&["task", "kill", "--signal", "SIGKILL", sandbox]);
    containerd.wait_task(sandbox, "STOPPED", Duration::from_secs(30));
    containerd.ok(&["task", "delete", sandbox]);
    containerd.ok(&["container", "rm", sandbox]);
    assert_gone(&containerd, member);
    assert_gone(&containerd, sandbox);
}

/// `ctr run -t` through a real pseudo-terminal (tmux): the guest process gets a terminal of
/// the window's size (ResizePty), what is typed reaches its shell, and its exit status
/// comes back to ctr.
#[test]
fn terminal_has_the_window_size_and_exit_status() {
    let (_ward, containerd) = setup();
    let id = "shim-tty";
    let line = format!(
        "ctr --address {} --namespace {} run -t --rm --runtime {WARD_SHIM_RUNTIME} {IMAGE} {id} sh; \
         echo ctr-exit=$?; sleep 600",
        containerd.socket.display(),
        containerd.namespace
    );
    let tmux = Tmux::start(&format!("ward-shim-{}", std::process::id()), 101, 33, &line);
    tmux.wait_for("# ", Duration::from_secs(60));
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
    tmux.type_line("exit 5");
    tmux.wait_for("ctr-exit=5", Duration::from_secs(30));
    assert_gone(&containerd, id);
}

/// A shim killed under its container: containerd runs the shim's `delete` action, which
/// stops the VM the dead shim left and removes its state.
#[test]
fn a_killed_shim_leaves_nothing_behind() {
    let (_ward, containerd) = setup();
    let id = "shim-crash";
    let out = containerd.run_shim(&["--detach"], id, &["sleep", "1000"]);
    assert!(out.status.success(), "ctr run -d: {}", text(&out.stderr));
    containerd.wait_task(id, "RUNNING", Duration::from_secs(60));
    let serving = shims(&containerd);
    assert_eq!(serving.len(), 1, "one shim: {serving:#?}");
    let pid: i32 = serving[0]
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the shim's PID");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing the shim");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while containerd.task_status(id).is_some_and(|s| s != "STOPPED") {
        assert!(
            std::time::Instant::now() < deadline,
            "the task of a dead shim is still {:?}",
            containerd.task_status(id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    if containerd.task_status(id).is_some() {
        containerd.ok(&["task", "delete", id]);
    }
    containerd.ok(&["container", "rm", id]);
    assert_gone(&containerd, id);
}

/// The configuration named by the runtime options (CRI's `ConfigPath`, here `ctr run
/// --runtime-config-path`) is the one the shim uses, with no WARD_CONFIG around.
#[test]
fn the_runtime_options_name_the_configuration() {
    let ward = Ward::new();
    let marker = "ward.shim_config_test=1";
    let config = ward.config_with(
        "shim-options.toml",
        &format!("kernel_params = \"{marker}\""),
    );
    let containerd = Containerd::with_ward_shim_env(&ward, false);
    let id = "shim-options";
    let config = config.to_str().expect("UTF-8 path");
    let out = containerd.run_shim(
        &["--detach", "--runtime-config-path", config],
        id,
        &["sleep", "1000"],
    );
    assert!(out.status.success(), "ctr run -d: {}", text(&out.stderr));
    containerd.wait_task(id, "RUNNING", Duration::from_secs(60));
    let cmdline = containerd.ok(&["task", "exec", "--exec-id", "c", id, "cat", "/proc/cmdline"]);
    assert!(
        cmdline.contains(marker),
        "guest kernel command line: {cmdline}"
    );
    containerd.ok(&["task", "kill", "--signal", "SIGKILL", id]);
    containerd.wait_task(id, "STOPPED", Duration::from_secs(30));
    containerd.ok(&["task", "delete", id]);
    containerd.ok(&["container", "rm", id]);
    assert_gone(&containerd, id);
}

/// `ctr task exec -t` through tmux: the exec gets its own terminal of the window's size.
#[test]
fn exec_terminal_has_the_window_size() {
    let (_ward, containerd) = setup();
    let id = "shim-exec-tty";
    let out = containerd.run_shim(&["--detach"], id, &["sleep", "1000"]);
    assert!(out.status.success(), "ctr run -d: {}", text(&out.stderr));
    containerd.wait_task(id, "RUNNING", Duration::from_secs(60));
    let line = format!(
        "ctr --address {} --namespace {} task exec -t --exec-id t1 {id} sh; \
         echo exec-exit=$?; sleep 600",
        containerd.socket.display(),
        containerd.namespace
    );
    let tmux = Tmux::start(
        &format!("ward-shim-exec-{}", std::process::id()),
        90,
        30,
        &line,
    );
    tmux.wait_for("# ", Duration::from_secs(60));
    tmux.type_line("echo res-$((1+1)) $(stty size)");
    let screen = tmux.wait_for("res-2 ", Duration::from_secs(20));
    let result: Vec<&str> = screen
        .lines()
        .find(|l| l.starts_with("res-2 "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        result.get(1..3),
        Some(&["30", "90"][..]),
        "stty size in the exec is not the window's 30x90:\n{screen}"
    );
    tmux.type_line("exit 4");
    tmux.wait_for("exec-exit=4", Duration::from_secs(30));
    containerd.ok(&["task", "kill", "--signal", "SIGKILL", id]);
    containerd.wait_task(id, "STOPPED", Duration::from_secs(30));
    containerd.ok(&["task", "delete", id]);
    containerd.ok(&["container", "rm", id]);
    assert_gone(&containerd, id);
}

/// UpdateTask, which ctr 1.6 cannot send, called on the shim's socket as containerd
/// would: the new memory limit is the guest cgroup's, as `ctr task metrics` shows.
#[test]
fn update_sets_the_guest_memory_limit() {
    use containerd_shim::api::UpdateTaskRequest;
    use containerd_shim::protos::protobuf::well_known_types::any::Any;
    use containerd_shim::protos::protobuf::MessageField;
    use containerd_shim::protos::ttrpc;
    use containerd_shim::protos::TaskClient;

    let (_ward, containerd) = setup();
    let id = "shim-update";
    let out = containerd.run_shim(&["--detach"], id, &["sleep", "1000"]);
    assert!(out.status.success(), "ctr run -d: {}", text(&out.stderr));
    containerd.wait_task(id, "RUNNING", Duration::from_secs(60));

    let address_file = containerd
        .dir
        .join("state/io.containerd.runtime.v2.task")
        .join(&containerd.namespace)
        .join(id)
        .join("address");
    let address = std::fs::read_to_string(&address_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", address_file.display()));
    let client =
        TaskClient::new(ttrpc::Client::connect(address.trim()).expect("connecting to the shim"));
    let limit: u64 = 100 << 20;
    let request = UpdateTaskRequest {
        id: id.to_string(),
        resources: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: format!("{{\"memory\":{{\"limit\":{limit}}}}}").into_bytes(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut ctx = ttrpc::context::with_timeout(60_000_000_000);
    ctx.add(
        "containerd-namespace-ttrpc".into(),
        containerd.namespace.clone(),
    );
    client.update(ctx, &request).expect("UpdateTask");

    let table = containerd.ok(&["task", "metrics", id]);
    assert_eq!(
        metric(&table, "memory.usage_limit"),
        Some(limit),
        "ctr task metrics: {table}"
    );

    containerd.ok(&["task", "kill", "--signal", "SIGKILL", id]);
    containerd.wait_task(id, "STOPPED", Duration::from_secs(30));
    containerd.ok(&["task", "delete", id]);
    containerd.ok(&["container", "rm", id]);
    assert_gone(&containerd, id);
}
