//! A host process of a container dies (the VM, the relay, `ward create` half-way): `state`
//! tells the truth afterwards, and `delete` leaves nothing behind — no process, no mount —
//! while the host files the container had bind-mounted survive untouched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ward_e2e::{alive, text, Ward};

/// Adds a read-only bind mount of a fresh host directory at /data to the bundle; returns
/// the host file that the container sees as /data/file.
fn with_host_bind(ward: &Ward, bundle: &Path, name: &str) -> PathBuf {
    let host_dir = ward.dir.path().join(format!("{name}-data"));
    std::fs::create_dir_all(&host_dir).unwrap();
    let file = host_dir.join("file");
    std::fs::write(&file, "host data\n").unwrap();
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "destination": "/data",
            "type": "bind",
            "source": host_dir,
            "options": ["rbind", "ro"],
        }));
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    file
}

fn state_file(ward: &Ward, id: &str) -> serde_json::Value {
    let path = ward.root.join(id).join("state.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_default()).unwrap_or_default()
}

fn vm_pid(ward: &Ward, id: &str) -> i64 {
    state_file(ward, id)["vm"]["processes"][0]["pid"]
        .as_i64()
        .expect("the VM's process is recorded")
}

fn kill9(pid: i64) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
}

/// Starts `sleep 1000` with a host bind mount and checks the guest sees the host file.
fn start_with_bind(ward: &Ward, id: &str) -> PathBuf {
    let bundle = ward.bundle(id, &["sleep", "1000"]);
    let file = with_host_bind(ward, &bundle, id);
    let out = ward.run_detached(&["run", "--detach", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(out.status.success(), "run --detach: {}", text(&out.stderr));
    let out = ward.run(&["exec", id, "cat", "/data/file"]);
    assert_eq!(text(&out.stdout), "host data\n", "{}", text(&out.stderr));
    // Read-only in the guest, as the spec asks.
    let out = ward.run(&["exec", id, "sh", "-c", "echo x > /data/file"]);
    assert!(!out.status.success(), "a read-only bind mount was writable");
    file
}

#[test]
fn a_dead_vm_reads_as_stopped_and_delete_cleans_up() {
    let ward = Ward::new();
    let file = start_with_bind(&ward, "vmdies");
    kill9(vm_pid(&ward, "vmdies"));
    ward.wait_status("vmdies", "stopped", Duration::from_secs(30));
    let out = ward.run(&["delete", "vmdies"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    ward.assert_nothing_left("vmdies");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "host data\n");
}

#[test]
fn a_dead_relay_reads_as_stopped_and_delete_force_cleans_up() {
    let ward = Ward::new();
    let file = start_with_bind(&ward, "relaydies");
    let relay = ward.state("relaydies")["pid"].as_i64().unwrap();
    assert!(alive(relay));
    kill9(relay);
    ward.wait_status("relaydies", "stopped", Duration::from_secs(10));
    // The VM still runs: only --force may take it down, and then everything goes.
    assert!(alive(vm_pid(&ward, "relaydies")));
    let out = ward.run(&["delete", "--force", "relaydies"]);
    assert!(
        out.status.success(),
        "delete --force: {}",
        text(&out.stderr)
    );
    ward.assert_nothing_left("relaydies");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "host data\n");
}

#[test]
fn a_create_killed_half_way_reads_as_stopped_and_delete_cleans_up() {
    let ward = Ward::new();
    let bundle = ward.bundle("halfway", &["sleep", "1000"]);
    let file = with_host_bind(&ward, &bundle, "halfway");
    let mut create = ward
        .command()
        .args(["create", "--bundle", bundle.to_str().unwrap(), "halfway"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting ward create");
    // Kill it once the VM is up but before the container is created.
    let deadline = Instant::now() + Duration::from_secs(60);
    while state_file(&ward, "halfway")["vm"].is_null() {
        assert!(Instant::now() < deadline, "the VM was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = ward.state("halfway");
    create.kill().expect("killing ward create");
    let _ = create.wait();
    assert_eq!(during["status"], "creating", "{during}");
    assert_eq!(ward.state("halfway")["status"], "stopped");
    let out = ward.run(&["delete", "halfway"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    ward.assert_nothing_left("halfway");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "host data\n");
}
