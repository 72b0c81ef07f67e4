//! The KVM suite: ward on a KVM that runs guest kernel code in hardware, with both
//! backends. On this project's machines that KVM exists one level down, in L1 (an
//! emulated-SVM QEMU guest, see tools/l1): `make test-kvm` (part of `make test`) builds
//! everything on the host and runs this binary there, all tests in one L1 boot.
//!
//! Run anywhere else, each test fails at once, naming the KVM class it found: none of
//! them passes by naming the host's limit.

mod block_rootfs;
mod builtin;
mod check;
mod confinement;
mod hotplug;
mod network;
mod qemu_kvm;

use std::path::Path;
use std::time::Duration;

use ward_e2e::{text, Ward};
use ward_hypervisor::KvmClass;

/// What KVM is here; fails the test unless it runs guest kernel code in hardware.
fn require_hardware_kvm() -> KvmClass {
    let report = ward_hypervisor::accel::probe_report(
        Path::new(ward_hypervisor::accel::DEFAULT_CACHE_DIR),
        true,
    );
    assert!(
        report.class.runs_guest_kernels_in_hardware(),
        "the KVM suite needs KVM that runs guest kernel code in hardware, and KVM here is \
         {}: {}. Run it in L1 with `make test-kvm`",
        report.class,
        report.reason
    );
    report.class
}

/// ward-vmm, built next to ward by `make build`.
fn require_vmm(ward: &Ward) {
    let path = ward.bin.with_file_name("ward-vmm");
    assert!(
        path.is_file(),
        "KVM suite prerequisite missing: {} (`make build` builds it)",
        path.display()
    );
}

/// Starts a container sleeping until killed (`run --detach`).
fn start_sleeper(ward: &Ward, config: &Path, id: &str) {
    let bundle = ward.bundle(id, &["sleep", "100000"]);
    start_bundle(ward, config, id, &bundle);
}

/// Starts the container of `bundle` with `run --detach`, asserting that it runs.
fn start_bundle(ward: &Ward, config: &Path, id: &str, bundle: &Path) {
    let mut command = ward.command();
    command
        .env("WARD_CONFIG", config)
        .args(["run", "--detach", "--bundle", bundle.to_str().unwrap(), id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(ward.dir.path().join(format!("{id}.err"))).unwrap());
    eprintln!("[kvm] run --detach {id}");
    let Some(out) = ward_e2e::status_within(&mut command, COMMAND_TIMEOUT) else {
        panic!(
            "run --detach {id} did not finish within {} s\n{}",
            COMMAND_TIMEOUT.as_secs(),
            hang_report(ward, id)
        );
    };
    let stderr =
        std::fs::read_to_string(ward.dir.path().join(format!("{id}.err"))).unwrap_or_default();
    assert!(out.success(), "run --detach {id}: {stderr}");
    assert_eq!(ward.state(id)["status"], "running");
}

/// How long one `ward exec` in this suite may take; a guest that hangs fails the test
/// with its console instead of holding the whole L1 boot until its limit.
const EXEC_TIMEOUT: Duration = Duration::from_secs(180);
/// How long any other ward command here may take (a boot included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);

/// `ward exec ID ARGS...` with `config`: (exit code, stdout, stderr).
fn exec(ward: &Ward, config: &Path, id: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = ward.command();
    command
        .env("WARD_CONFIG", config)
        .arg("exec")
        .arg(id)
        .args(args);
    eprintln!("[kvm] exec {id} {args:?}");
    match ward_e2e::output_within(&mut command, EXEC_TIMEOUT) {
        Some(out) => (out.status.code(), text(&out.stdout), text(&out.stderr)),
        None => panic!(
            "ward exec {id} {args:?} did not finish within {} s\n{}",
            EXEC_TIMEOUT.as_secs(),
            hang_report(ward, id)
        ),
    }
}

/// What a command that hung leaves to read: the VM's console, and every process of
/// ward's (this test's ward commands, relays, VMMs, file servers) with where each of its
/// threads waits in the kernel.
fn hang_report(ward: &Ward, id: &str) -> String {
    let mut report = console_of(ward, id);
    let mut pids: Vec<i64> = ["ward", "virtiofsd", "qemu"]
        .iter()
        .flat_map(|needle| ward_e2e::pids_mentioning(needle))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        let read = |what: &str| std::fs::read_to_string(format!("/proc/{pid}/{what}"));
        let cmdline = read("cmdline").unwrap_or_default().replace('\0', " ");
        report.push_str(&format!("\n--- {pid}: {}", cmdline.trim()));
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let tid = task.file_name().to_string_lossy().into_owned();
            let comm = read(&format!("task/{tid}/comm")).unwrap_or_default();
            let wchan = read(&format!("task/{tid}/wchan")).unwrap_or_default();
            let stack = read(&format!("task/{tid}/stack")).unwrap_or_default();
            let top: Vec<&str> = stack.lines().take(6).collect();
            report.push_str(&format!(
                "\n  {tid} {} wchan {wchan}: {}",
                comm.trim(),
                top.join(" | ")
            ));
        }
    }
    report
}

/// The end of the console of container `id`'s VM, for a failure message.
fn console_of(ward: &Ward, id: &str) -> String {
    match ward_runtime::container::store::Store::new(ward.root.clone()).load(id) {
        Ok(state) => match state.vm {
            Some(vm) => format!(
                "the guest console ({}) ends with:\n{}",
                vm.console_log.display(),
                ward_hypervisor::console_tail(&vm.console_log, 40)
            ),
            None => format!("container {id} has no VM"),
        },
        Err(e) => format!("container {id}'s state is unreadable: {e}"),
    }
}

/// Kills the container, waits for it to stop, deletes it, and checks that none of its
/// host processes is left.
fn kill_and_delete(ward: &Ward, config: &Path, id: &str) {
    let run = |args: &[&str]| {
        let mut command = ward.command();
        command.env("WARD_CONFIG", config).args(args);
        eprintln!("[kvm] {args:?}");
        ward_e2e::output_within(&mut command, COMMAND_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "ward {args:?} did not finish within {} s\n{}",
                COMMAND_TIMEOUT.as_secs(),
                hang_report(ward, id)
            )
        })
    };
    let out = run(&["kill", id, "KILL"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    ward.wait_status(id, "stopped", Duration::from_secs(60));
    let out = run(&["delete", id]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    ward.assert_nothing_left(id);
}
