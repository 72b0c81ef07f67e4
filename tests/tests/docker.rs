//! ward as docker's runtime: Debian's docker 20.10 (/usr/bin/docker, /usr/sbin/dockerd)
//! with `--runtime ward`, a runtime that dockerd's runc shim (io.containerd.runc.v2) runs
//! as its runc binary. Each test starts a private dockerd (its own data root, exec root,
//! socket, daemon.json and containerd; no host network: containers run with `--network
//! none`); ward's configuration reaches it as `--config` from the runtime's `runtimeArgs`.
//!
//! The shim gives ward `--root <exec-root>/runtime-runc/moby` and 64-hex container IDs;
//! the exec root here (/tmp/ward-e2e-docker-<pid>-<n>/exec) is deeper than docker's default
//! (/var/run/docker), so these tests also hold ward to its rule that no path it builds
//! depends on the depth of `--root` or the length of an ID.
//!
//! Not covered: docker with ward's own shim (runtime type io.containerd.ward.v2). docker
//! 20.10 cannot name one: its daemon.json runtimes have only `path` and `runtimeArgs`
//! (`runtimeType` came with docker 23), and `--runtime` takes only configured names.
//! containerd drives that shim in tests/tests/shim_v2.rs and tests/tests/cri.rs.

use std::time::{Duration, Instant};

use ward_e2e::engines::{ward_processes_mentioning, Docker};
use ward_e2e::{text, Ward};

fn setup() -> (Ward, Docker) {
    let ward = Ward::new();
    let docker = Docker::with_ward(&ward);
    (ward, docker)
}

/// Nothing of container `id` (its full ID) is left: docker lists no container, ward keeps
/// no state for it, and no QEMU, vsock device or relay names it or its state.
fn assert_gone(docker: &Docker, id: &str) {
    let all = docker.ok(&["ps", "--all", "--quiet", "--no-trunc"]);
    assert!(
        !all.contains(id),
        "docker still lists {id}: {all}; dockerd's log: {}",
        docker.log()
    );
    let state = docker.runtime_root().join(id);
    assert!(
        !state.exists(),
        "ward's state of {id} remains: {}",
        state.display()
    );
    let dir = state.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = ward_processes_mentioning(&[&dir, id]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of removed container {id} remain: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the container in the background and returns its full ID, once it is running.
fn run_detached(docker: &Docker, name: &str, args: &[&str]) -> String {
    run_detached_with(docker, name, &[], args)
}

/// [`run_detached`] with more `docker run` options.
fn run_detached_with(docker: &Docker, name: &str, opts: &[&str], args: &[&str]) -> String {
    let mut all = vec!["--detach", "--name", name];
    all.extend_from_slice(opts);
    let out = docker.run(&all, args);
    assert!(
        out.status.success(),
        "docker run -d: {}; dockerd's log: {}",
        text(&out.stderr),
        docker.log()
    );
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "docker run -d prints the ID: {id:?}");
    docker.wait_status(name, "running", Duration::from_secs(60));
    id
}

/// The container's full ID, from its name.
fn full_id(docker: &Docker, name: &str) -> String {
    docker.inspect(name, "{{.Id}}")
}

#[test]
fn run_rm_prints_output_and_propagates_the_exit_code() {
    let (_ward, docker) = setup();
    let out = docker.run(&["--rm", "--name", "echo1"], &["echo", "hi"]);
    assert!(
        out.status.success(),
        "docker run: {}; dockerd's log: {}",
        text(&out.stderr),
        docker.log()
    );
    assert_eq!(text(&out.stdout), "hi\n", "stderr: {}", text(&out.stderr));
    // The guest's kernel, not the host's; docker's default seccomp profile, loaded by the
    // agent.
    let out = docker.run(
        &["--name", "kernel"],
        &[
            "sh",
            "-c",
            "cat /proc/version; grep ^Seccomp: /proc/self/status",
        ],
    );
    assert!(out.status.success(), "docker run: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("-ward"),
        "guest kernel: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("Seccomp:\t2\n"),
        "docker's default profile: {}",
        text(&out.stdout)
    );
    let id = full_id(&docker, "kernel");
    docker.ok(&["rm", "kernel"]);
    assert_gone(&docker, &id);

    let out = docker.run(&["--name", "exit3"], &["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(docker.inspect("exit3", "{{.State.ExitCode}}"), "3");
    let id = full_id(&docker, "exit3");
    docker.ok(&["rm", "exit3"]);
    assert_gone(&docker, &id);
}

#[test]
fn detached_logs_exec_pause_stop() {
    let (_ward, docker) = setup();
    let name = "sleeper";
    // TERM ignored: `docker stop` must fall back to KILL after its timeout.
    let id = run_detached(
        &docker,
        name,
        &[
            "sh",
            "-c",
            "trap '' TERM; echo to-stdout; echo to-stderr >&2; while true; do sleep 1; done",
        ],
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = docker.docker(&["logs", name]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        if stdout.contains("to-stdout") && stderr.contains("to-stderr") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "docker logs shows no output within 20 s: stdout {stdout:?} stderr {stderr:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    assert_eq!(docker.ok(&["exec", name, "echo", "from-exec"]), "from-exec");
    let out = docker.docker(&["exec", name, "sh", "-c", "echo out; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");

    docker.ok(&["pause", name]);
    docker.wait_status(name, "paused", Duration::from_secs(10));
    docker.ok(&["unpause", name]);
    docker.wait_status(name, "running", Duration::from_secs(10));
    assert_eq!(docker.ok(&["exec", name, "echo", "awake"]), "awake");

    let started = Instant::now();
    docker.ok(&["stop", "--time", "2", name]);
    let took = started.elapsed();
    eprintln!("docker stop -t 2 took {took:?}");
    assert!(
        took >= Duration::from_secs(2),
        "docker stop -t 2 returned after {took:?}: TERM is ignored, so only KILL after 2 s ends it"
    );
    assert_eq!(docker.inspect(name, "{{.State.Status}}"), "exited");
    assert_eq!(docker.inspect(name, "{{.State.ExitCode}}"), "137");

    docker.ok(&["rm", "--force", name]);
    assert_gone(&docker, &id);
}

#[test]
fn kill_and_rm_force_leave_no_vm() {
    let (_ward, docker) = setup();
    let id = run_detached(&docker, "killed", &["sleep", "1000"]);
    docker.ok(&["kill", "killed"]);
    docker.wait_status("killed", "exited", Duration::from_secs(30));
    assert_eq!(docker.inspect("killed", "{{.State.ExitCode}}"), "137");
    docker.ok(&["rm", "killed"]);
    assert_gone(&docker, &id);

    // Removed while running: docker kills and deletes it through the runtime.
    let id = run_detached(&docker, "forced", &["sleep", "1000"]);
    docker.ok(&["rm", "--force", "forced"]);
    assert_gone(&docker, &id);
}

/// `docker run --memory` reaches the container's cgroup in the guest. docker sets the
/// spec's swap limit too (memory + swap: twice the memory unless `--memory-swap` says
/// otherwise) when the host's cgroups account swap; the guest may have no swap at all.
#[test]
fn memory_limit_reaches_the_guest() {
    let (_ward, docker) = setup();
    // docker 20.10 gives the container no cgroup namespace on a cgroup v1 host like this
    // one, so its cgroup is found by its path under the guest's hierarchy.
    let out = docker.run(
        &["--rm", "--memory", "200m"],
        &[
            "sh",
            "-c",
            "c=$(cat /proc/self/cgroup); cat /sys/fs/cgroup${c#0::}/memory.max",
        ],
    );
    assert!(
        out.status.success(),
        "docker run --memory 200m: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "209715200");
}

/// A docker size ("1.5MiB", "23.54GiB", "512KiB", "0B") in bytes.
fn docker_size(size: &str) -> Option<f64> {
    let size = size.trim();
    let split = size.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = size.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "KiB" | "kB" => 1024.0,
        "MiB" | "MB" => 1024.0 * 1024.0,
        "GiB" | "GB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" | "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// `docker stats --no-stream` answers for a ward container with memory in use. What it
/// reads is the host cgroup of the container's init PID (dockerd's runc shim does that),
/// here ward's relay. The VM and its helpers live in the sandbox's host cgroup (see
/// tests/tests/host_cgroup.rs), the relay does not: the numbers are the relay's cgroup's,
/// not the VM's.
#[test]
fn stats_show_the_containers_memory() {
    let (_ward, docker) = setup();
    let name = "stats";
    let id = run_detached_with(&docker, name, &["--memory", "200m"], &["sleep", "1000"]);
    let mem = docker.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", name]);
    eprintln!("docker stats MemUsage: {mem}");
    let (used, limit) = mem
        .split_once('/')
        .unwrap_or_else(|| panic!("docker stats MemUsage is not USED / LIMIT: {mem:?}"));
    let used = docker_size(used).unwrap_or_else(|| panic!("MemUsage {mem:?}"));
    let limit = docker_size(limit).unwrap_or_else(|| panic!("MemUsage {mem:?}"));
    assert!(used > 0.0, "docker stats shows no memory use: {mem:?}");
    assert!(limit > 0.0, "docker stats shows no memory limit: {mem:?}");
    docker.ok(&["rm", "--force", name]);
    assert_gone(&docker, &id);
}
