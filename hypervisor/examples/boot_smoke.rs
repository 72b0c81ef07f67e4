//! Boots a real VM through the qemu backend, times it, and checks that shutdown leaves
//! nothing behind.
//!
//! ```text
//! cargo run -p ward-hypervisor --example boot_smoke -- \
//!     --kernel build/guest/vmlinux --initrd /tmp/smoke/initramfs.cpio.gz \
//!     [--machine microvm|q35] [--accel auto|kvm|tcg] [--vcpus N] [--memory MIB] \
//!     [--port 1024] [--expect TEXT] [--runs N] [--share yes] [--guest-exits yes]
//!     [--params "EXTRA KERNEL PARAMS"]
//! ```
//!
//! With `--guest-exits yes` the initramfs's init is expected to end by itself (e.g. exit,
//! so that the guest panics and QEMU, with -no-reboot, exits): the check is then that every
//! process of the VM ends on its own, without `shutdown()`.
//!
//! The initramfs is a throwaway: busybox-static as /bin/busybox, an /init script that
//! prints `--expect`'s text on the console, and a static program that listens on vsock
//! port `--port` and writes "hello\n" to each connection. With `--share yes`, a host
//! directory holding hello.txt ("shared-ok") is shared with tag "smoke", and the console
//! must show it (the init script mounts the tag and prints the file).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ward_hypervisor::{AccelChoice, Hypervisor, QemuConfig, VmConfig, VmInstance, VsockEndpoint};

struct Options {
    kernel: PathBuf,
    initrd: PathBuf,
    machine: String,
    accel: AccelChoice,
    vcpus: u32,
    memory_mib: u32,
    port: u32,
    expect: String,
    runs: u32,
    share: bool,
    guest_exits: bool,
    params: String,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        kernel: PathBuf::from("build/guest/vmlinux"),
        initrd: PathBuf::new(),
        machine: "microvm".into(),
        accel: AccelChoice::Auto,
        vcpus: 1,
        memory_mib: 256,
        port: 1024,
        expect: "WARD-SMOKE".into(),
        runs: 1,
        share: false,
        guest_exits: false,
        params: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u32>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--kernel" => o.kernel = value.clone().into(),
            "--initrd" => o.initrd = value.clone().into(),
            "--machine" => o.machine = value.clone(),
            "--accel" => {
                o.accel = serde_json::from_value(serde_json::Value::String(value.clone()))
                    .map_err(|e| format!("--accel: {e}"))?
            }
            "--vcpus" => o.vcpus = number()?,
            "--memory" => o.memory_mib = number()?,
            "--port" => o.port = number()?,
            "--expect" => o.expect = value.clone(),
            "--runs" => o.runs = number()?,
            "--share" => o.share = value == "yes",
            "--guest-exits" => o.guest_exits = value == "yes",
            "--params" => o.params = value.clone(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// Polls `done` every millisecond until it is true; the time it took.
fn time_until(
    start: Instant,
    timeout: Duration,
    vm: &VmInstance,
    qemu: &dyn Hypervisor,
    mut done: impl FnMut() -> bool,
) -> Result<Duration, String> {
    loop {
        if done() {
            return Ok(start.elapsed());
        }
        if !qemu.is_running(vm) {
            return Err("QEMU exited".into());
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn run_once(o: &Options, qemu: &dyn Hypervisor) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("ward-smoke-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let config = VmConfig {
        id: "smoke".into(),
        run_dir: dir.path().to_path_buf(),
        kernel: o.kernel.clone(),
        initrd: o.initrd.clone(),
        extra_kernel_params: o.params.clone(),
        vcpus: o.vcpus,
        memory_mib: o.memory_mib,
        shared_dirs: vec![],
        hotplug: None,
        host_cgroups: Vec::new(),
        nics: Vec::new(),
    };
    let mut config = config;
    let shared = dir.path().join("shared");
    if o.share {
        std::fs::create_dir(&shared).map_err(|e| e.to_string())?;
        std::fs::write(shared.join("hello.txt"), "shared-ok").map_err(|e| e.to_string())?;
        config.shared_dirs.push(ward_hypervisor::SharedDir {
            tag: "smoke".into(),
            host_path: shared.clone(),
            read_only: true,
        });
    }
    let start = Instant::now();
    let vm = qemu.launch(&config).map_err(|e| e.to_string())?;
    let launched = start.elapsed();
    println!("launched: {} in {launched:?}", vm.description);
    for p in &vm.processes {
        println!("  process {} pid {}", p.name, p.pid);
    }
    if o.guest_exits {
        return watch_exit(qemu, &vm, dir.path(), start);
    }
    let outcome = measure(o, qemu, &vm, start);
    let stop = Instant::now();
    let shutdown = qemu.shutdown(&vm, Duration::from_secs(5));
    println!("shutdown: {:?} in {:?}", shutdown, stop.elapsed());
    // The watcher reaps the helper a moment after QEMU is gone.
    std::thread::sleep(Duration::from_millis(100));
    let left: Vec<_> = vm.processes.iter().filter(|p| p.is_alive()).collect();
    let sockets: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type().is_ok_and(|t| {
                use std::os::unix::fs::FileTypeExt;
                t.is_socket()
            })
        })
        .map(|e| e.path())
        .collect();
    if let Err(e) = outcome {
        println!(
            "console:\n{}",
            ward_hypervisor::console_tail(&vm.console_log, 40)
        );
        println!(
            "qemu.log:\n{}",
            ward_hypervisor::console_tail(&dir.path().join("qemu.log"), 20)
        );
        return Err(e);
    }
    shutdown.map_err(|e| e.to_string())?;
    if !left.is_empty() || !sockets.is_empty() {
        return Err(format!(
            "left behind: processes {left:?}, sockets {sockets:?}"
        ));
    }
    println!(
        "nothing left behind: processes gone, no sockets in {}",
        dir.path().display()
    );
    Ok(())
}

/// Waits for the VM to end by itself, then for every one of its processes to go.
fn watch_exit(
    qemu: &dyn Hypervisor,
    vm: &VmInstance,
    dir: &Path,
    start: Instant,
) -> Result<(), String> {
    let timeout = Duration::from_secs(120);
    while qemu.is_running(vm) {
        if start.elapsed() > timeout {
            let _ = qemu.shutdown(vm, Duration::from_secs(1));
            return Err("the guest did not end by itself".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let exited = start.elapsed();
    println!("QEMU exited by itself after {exited:?}");
    while vm.processes.iter().any(|p| p.is_alive()) {
        if start.elapsed() > exited + Duration::from_secs(10) {
            let left: Vec<_> = vm.processes.iter().filter(|p| p.is_alive()).collect();
            let _ = qemu.shutdown(vm, Duration::from_secs(1));
            return Err(format!("still running 10 s after QEMU: {left:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "every process ended on its own {:?} after QEMU; console ends with:\n{}",
        start.elapsed() - exited,
        ward_hypervisor::console_tail(&vm.console_log, 3)
    );
    qemu.shutdown(vm, Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    println!(
        "shutdown() of the ended VM succeeded; run dir {}",
        dir.display()
    );
    Ok(())
}

fn measure(
    o: &Options,
    qemu: &dyn Hypervisor,
    vm: &VmInstance,
    start: Instant,
) -> Result<(), String> {
    let console = vm.console_log.clone();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let timeout = Duration::from_secs(120);
    let first_byte = time_until(start, timeout, vm, qemu, || size(&console) > 0)
        .map_err(|e| format!("waiting for the first console byte: {e}"))?;
    println!("first console byte after {first_byte:?}");
    let expected = time_until(start, timeout, vm, qemu, || {
        std::fs::read_to_string(&console).is_ok_and(|c| c.contains(&o.expect))
    })
    .map_err(|e| format!("waiting for {:?} on the console: {e}", o.expect))?;
    println!("console shows {:?} after {expected:?}", o.expect);
    if o.share {
        let seen = time_until(start, timeout, vm, qemu, || {
            std::fs::read_to_string(&console).is_ok_and(|c| c.contains("9p says shared-ok"))
        })
        .map_err(|e| format!("waiting for the shared file on the console: {e}"))?;
        println!("guest read the shared directory after {seen:?}");
    }
    let mut attempts = 0;
    let mut last = String::new();
    let connected = time_until(start, timeout, vm, qemu, || {
        attempts += 1;
        match qemu.connect(vm, o.port) {
            Ok(mut conn) => {
                let mut hello = String::new();
                match conn.read_to_string(&mut hello) {
                    Ok(_) if hello == "hello\n" => true,
                    other => {
                        last = format!("read {other:?}: {hello:?}");
                        false
                    }
                }
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    })
    .map_err(|e| format!("connecting to guest port {}: {e} (last: {last})", o.port))?;
    let how = match &vm.vsock {
        VsockEndpoint::Hybrid { uds } => format!("hybrid via {}", uds.display()),
        VsockEndpoint::Kernel { cid } => format!("kernel vsock CID {cid}"),
    };
    println!(
        "vsock port {} answered \"hello\" after {connected:?} ({attempts} attempts, {how})",
        o.port
    );
    if let Some(rest) = std::fs::read_to_string(&console).ok().and_then(|c| {
        c.lines()
            .find(|l| l.contains("cmdline"))
            .map(str::to_string)
    }) {
        println!("guest: {rest}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("boot_smoke: {e}");
            return ExitCode::from(2);
        }
    };
    let qemu = ward_hypervisor::qemu::Qemu::new(
        QemuConfig {
            machine: o.machine.clone(),
            ..QemuConfig::default()
        },
        o.accel,
    );
    for run in 1..=o.runs {
        println!("--- run {run} of {}", o.runs);
        if let Err(e) = run_once(&o, &qemu) {
            eprintln!("boot_smoke: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
