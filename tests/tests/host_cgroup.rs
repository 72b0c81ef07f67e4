//! The sandbox's host cgroup (issue 14): every host process of a container's VM (QEMU,
//! its console keeper, vhost-device-vsock and its watcher) runs in the cgroup the
//! container's `linux.cgroupsPath` names (cgroupfs and systemd forms), or in ward's own
//! `/ward/<sandbox ID>` without one; the memory limit is the VM's memory plus ward's
//! overhead; `ward delete` removes the cgroup (and a parent ward made for it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ward_e2e::{engines, pids_mentioning, text, Ward};
use ward_runtime::sandbox::host_cgroup::OVERHEAD_MIB;
use ward_runtime::sandbox::store::SandboxStore;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const MIB: u64 = 1024 * 1024;

fn v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// The directory of cgroup `path` that holds `controller`'s files.
fn dir_of(path: &str, controller: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    if v2() {
        Path::new(CGROUP_ROOT).join(relative)
    } else {
        Path::new(CGROUP_ROOT).join(controller).join(relative)
    }
}

/// The controllers whose hierarchy the sandbox's processes must share.
fn controllers() -> &'static [&'static str] {
    if v2() {
        &[""]
    } else {
        &["memory", "cpu", "cpuacct", "pids"]
    }
}

/// Process `pid`'s cgroup in `controller`'s hierarchy ("" is v2's), from /proc/PID/cgroup.
fn cgroup_of(pid: i64, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            id == "0" && list.is_empty()
        } else {
            list.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_string())
    })
}

/// Sets `linux.cgroupsPath` in the bundle's config.json.
fn set_cgroups_path(bundle: &Path, path: &str) {
    let file = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("config.json")).expect("JSON");
    spec["linux"]["cgroupsPath"] = path.into();
    std::fs::write(&file, serde_json::to_vec_pretty(&spec).expect("JSON")).expect("writing");
}

/// Every host process of sandbox `id`: those it recorded, and those that name its
/// directory (as tests/tests/confinement.rs finds them), with what each is.
fn sandbox_processes(ward: &Ward, id: &str) -> Vec<(String, i64)> {
    let state = SandboxStore::new(&ward.root)
        .load(id)
        .expect("the sandbox's state");
    let mut found: Vec<(String, i64)> = state
        .vm
        .expect("a VM")
        .processes
        .iter()
        .map(|p| (p.name.clone(), i64::from(p.pid)))
        .collect();
    let needle = engines::sandbox_dir(&ward.root, id).display().to_string();
    for pid in pids_mentioning(&needle) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| text(&c))
            .unwrap_or_default();
        let argv0 = cmdline.split('\0').next().unwrap_or_default().to_string();
        if ["qemu-system", "vhost-device-vsock", "virtiofsd", "ward-vmm"]
            .iter()
            .any(|p| argv0.contains(p))
            && !found.iter().any(|(_, p)| *p == pid)
        {
            found.push((argv0, pid));
        }
    }
    found
}

/// Runs a container (with `cgroups_path` if any), checks that its sandbox's processes are
/// all in `expected` with the memory limit the VM's size calls for, deletes it, and checks
/// that the cgroup is gone.
fn check_sandbox_cgroup(ward: &Ward, id: &str, cgroups_path: Option<&str>, expected: &str) {
    let bundle = ward.bundle(id, &["sleep", "1000"]);
    if let Some(path) = cgroups_path {
        set_cgroups_path(&bundle, path);
    }
    let out = ward.run_detached(&["run", "--detach", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(out.status.success(), "run {id}: {}", text(&out.stderr));

    let processes = sandbox_processes(ward, id);
    for name in ["qemu", "console", "vhost-device-vsock", "vsock-watcher"] {
        assert!(
            processes.iter().any(|(n, _)| n == name),
            "no {name} among the sandbox's processes: {processes:?}"
        );
    }
    for (name, pid) in &processes {
        for controller in controllers() {
            assert_eq!(
                cgroup_of(*pid, controller).as_deref(),
                Some(expected),
                "{name} ({pid}) in the {controller:?} hierarchy"
            );
        }
    }

    let state = SandboxStore::new(&ward.root).load(id).expect("state");
    let memory_mib = u64::from(state.base.memory_mib);
    let limit_file = if v2() {
        dir_of(expected, "memory").join("memory.max")
    } else {
        dir_of(expected, "memory").join("memory.limit_in_bytes")
    };
    let limit = std::fs::read_to_string(&limit_file).expect("the memory limit");
    assert_eq!(
        limit.trim(),
        ((memory_mib + OVERHEAD_MIB) * MIB).to_string(),
        "{}",
        limit_file.display()
    );
    // What the VM's processes used at most so far, to show the headroom.
    let peak_file = dir_of(expected, "memory").join(if v2() {
        "memory.peak"
    } else {
        "memory.max_usage_in_bytes"
    });
    let peak = std::fs::read_to_string(&peak_file).unwrap_or_default();
    eprintln!(
        "{id}: {} processes in {expected}; {} = {} ({memory_mib} MiB + {OVERHEAD_MIB} MiB); \
         peak use so far {} MiB",
        processes.len(),
        limit_file.display(),
        limit.trim(),
        peak.trim().parse::<u64>().map_or(0, |b| b / MIB)
    );

    let out = ward.run(&["kill", id, "KILL"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    ward.wait_status(id, "stopped", Duration::from_secs(60));
    let out = ward.run(&["delete", id]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    ward.assert_nothing_left(id);
    for controller in controllers() {
        let dir = dir_of(expected, controller);
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

#[test]
fn an_engines_cgroupfs_path_holds_every_process_of_the_vm() {
    let ward = Ward::new();
    let parent = format!("/ward-e2e-{}", std::process::id());
    let path = format!("{parent}/ctr");
    check_sandbox_cgroup(&ward, "cgfs", Some(&path), &path);
    // ward made the parent, and nothing else is in it: it went with the sandbox.
    for controller in controllers() {
        let dir = dir_of(&parent, controller);
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

#[test]
fn a_systemd_path_is_its_scope_in_its_slice() {
    let ward = Ward::new();
    let name = format!("e2e{}", std::process::id());
    // As systemd nests slices: ward-e2e.slice lies in ward.slice.
    let path = format!("ward-e2e.slice:wardtest:{name}");
    let expected = format!("/ward.slice/ward-e2e.slice/wardtest-{name}.scope");
    check_sandbox_cgroup(&ward, "cgsd", Some(&path), &expected);
}

#[test]
fn without_a_path_the_sandbox_gets_wards_own_cgroup() {
    let ward = Ward::new();
    check_sandbox_cgroup(&ward, "cgown", None, "/ward/cgown");
}

#[test]
fn a_path_that_escapes_fails_the_create_and_leaves_nothing() {
    let ward = Ward::new();
    let bundle = ward.bundle("cgbad", &["true"]);
    set_cgroups_path(&bundle, "/../../escape");
    let out = ward.run_detached(&["create", "--bundle", bundle.to_str().unwrap(), "cgbad"]);
    assert!(!out.status.success(), "create with an escaping cgroupsPath");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cgroupsPath"), "{stderr}");
    ward.assert_nothing_left("cgbad");
}
