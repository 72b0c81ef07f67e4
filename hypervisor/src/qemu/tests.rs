//! The backend's paths that need no real QEMU: inputs refused up front, a VMM that dies
//! during start-up, and shutdown of what is already (or partly) gone.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::detach::{spawn_detached, Program};
use crate::{Error, ProcessRecord, VsockEndpoint};

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn vm_config(dir: &Path) -> VmConfig {
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    std::fs::write(dir.join("vmlinux"), b"kernel").expect("kernel");
    std::fs::write(dir.join("initrd"), b"initrd").expect("initrd");
    VmConfig {
        id: "t".into(),
        run_dir,
        kernel: dir.join("vmlinux"),
        initrd: dir.join("initrd"),
        extra_kernel_params: String::new(),
        vcpus: 1,
        memory_mib: 128,
        shared_dirs: vec![],
        hotplug: None,
        host_cgroups: Vec::new(),
        nics: Vec::new(),
    }
}

fn backend(dir: &Path, binary: PathBuf, helper: PathBuf) -> Qemu {
    Qemu::new(
        QemuConfig {
            binary,
            vsock_helper: helper,
            ..QemuConfig::default()
        },
        AccelChoice::Tcg,
    )
    .with_cache_dir(dir.join("cache"))
}

/// Processes whose command line mentions `needle` (our own fakes, by their temp dir).
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let alive = ProcessRecord::of("?", *pid).is_some_and(|p| p.is_alive());
            alive && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

#[test]
fn refuses_missing_assets_and_binaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vm = vm_config(dir.path());
    vm.kernel = dir.path().join("no-kernel");
    let qemu = backend(dir.path(), "/bin/true".into(), "/bin/true".into());
    match qemu.launch(&vm) {
        Err(Error::MissingAsset { hint, path, .. }) => {
            assert_eq!(path, dir.path().join("no-kernel"));
            assert!(hint.contains("make assets"));
        }
        other => panic!("expected MissingAsset, got {other:?}"),
    }

    let vm = vm_config(dir.path());
    let qemu = backend(dir.path(), "no-such-qemu-ward".into(), "/bin/true".into());
    match qemu.launch(&vm) {
        Err(Error::MissingBinary { hint, .. }) => assert!(hint.contains("qemu-system-x86")),
        other => panic!("expected MissingBinary, got {other:?}"),
    }
}

#[test]
fn a_vmm_dying_at_start_up_is_reported_and_its_helper_stopped() {
    if vhost_vsock::available() {
        return; // this test is about the vhost-device-vsock path
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let needle = dir.path().display().to_string();
    // A fake helper: "ready" once its socket path exists, then serves forever.
    let helper = script(
        dir.path(),
        "fake-vsock",
        "touch \"$4\"; exec tail -f \"$4\"",
    );
    let qemu_bin = script(
        dir.path(),
        "fake-qemu",
        "echo 'qemu: cannot boot' >&2; exit 1",
    );
    let vm = vm_config(dir.path());
    let err = backend(dir.path(), qemu_bin, helper)
        .launch(&vm)
        .expect_err("the fake QEMU exits");
    match &err {
        Error::HelperDied { what, detail, .. } => {
            assert_eq!(what, "qemu");
            assert!(detail.contains("qemu: cannot boot"), "{detail}");
            assert!(detail.contains("console"), "{detail}");
        }
        other => panic!("expected HelperDied, got {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "helpers left: {:?}",
            processes_mentioning(&needle)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shutdown_cleans_up_what_is_left_and_succeeds_when_all_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = paths::RunPaths::new(dir.path());
    // A "VMM" that never answers QMP: shutdown must fall back to signals, in bounded time.
    let program = Program::new(
        "sleep",
        Path::new("/bin/sleep"),
        &["100"],
        dir.path(),
        &dir.path().join("sleep.log"),
    )
    .expect("program");
    let pid = spawn_detached(&program).expect("spawn");
    let record = ProcessRecord::of("qemu", pid).expect("runs");
    for socket in paths.sockets() {
        std::fs::write(socket, b"").expect("stale socket");
    }
    let vm = VmInstance {
        backend: BackendKind::Qemu,
        processes: vec![record.clone()],
        vsock: VsockEndpoint::Hybrid {
            uds: paths.hybrid_uds.clone(),
        },
        control_socket: paths.qmp.clone(),
        console_log: paths.console.clone(),
        description: "test".into(),
        shared_fs: crate::SharedFs::NineP,
        hotplug: None,
    };
    let qemu = Qemu::new(QemuConfig::default(), AccelChoice::Tcg);
    let start = Instant::now();
    qemu.shutdown(&vm, Duration::from_millis(200))
        .expect("shutdown");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!record.is_alive());
    assert!(!qemu.is_running(&vm));
    for socket in paths.sockets() {
        assert!(!socket.exists(), "{} left", socket.display());
    }
    // Again, with everything gone.
    qemu.shutdown(&vm, Duration::from_millis(200))
        .expect("shutdown of a gone VM");
}
