//! The builtin backend: ward's own VMM (`ward-vmm`) boots ward's guest.
//!
//! These are the slow tests: on a host whose KVM emulates guest kernel code (this
//! project's CI machines; `ward check` says "emulated"), a boot takes minutes.
//!
//! Such hosts also break the guest's `syscall` instruction: the host enters the guest
//! kernel's syscall entry without leaving user mode, so the guest's first process dies
//! at its first system call (`init[1]: segfault at <entry_SYSCALL_64>`), under ward-vmm
//! as under QEMU with KVM. There no container can run on KVM at all (ward's `auto`
//! backend picks QEMU with TCG there); the tests check what the host allows, and say
//! which case they checked.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ward_e2e::{pids_mentioning, text, Ward};
use ward_hypervisor::{
    backend_of, BackendKind, BuiltinConfig, DiskSpec, HypervisorConfig, KvmClass, VmConfig,
};

/// Kernel-only boots and hotplug on an emulated-ring-0 host take minutes.
const SLOW: Duration = Duration::from_secs(900);

/// What KVM is here; fails the test where there is none to use (ward-vmm needs it).
fn kvm_class() -> KvmClass {
    let report = ward_hypervisor::accel::probe_report(
        Path::new(ward_hypervisor::accel::DEFAULT_CACHE_DIR),
        false,
    );
    assert!(
        report.class != KvmClass::Unusable,
        "end-to-end test prerequisite missing: a usable /dev/kvm for ward-vmm ({:?})",
        report.reason
    );
    report.class
}

/// ward-vmm, built next to ward by `make build`.
fn vmm_binary(ward: &Ward) -> PathBuf {
    let path = ward.bin.with_file_name("ward-vmm");
    assert!(
        path.is_file(),
        "end-to-end test prerequisite missing: {} (`make build` builds it)",
        path.display()
    );
    path
}

/// The guest assets named by the test configuration.
fn assets(ward: &Ward) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(&ward.config).expect("reading the test configuration");
    let value = |key: &str| -> PathBuf {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.trim().strip_prefix('='))
            .map(|v| PathBuf::from(v.trim().trim_matches('"')))
            .unwrap_or_else(|| panic!("{key} not in {}", ward.config.display()))
    };
    (value("kernel"), value("initrd"))
}

fn wait_console(log: &Path, needle: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        if got.contains(needle) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{needle:?} not on the console after {timeout:?}; it ends with:\n{}",
            got.lines()
                .rev()
                .take(25)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Through the `Hypervisor` trait: ward-vmm boots ward's kernel and initramfs, and a
/// vCPU and a block device hot-added while the guest runs show up in the guest.
///
/// The guest kernel is kept waiting in the kernel (no init: `rdinit=` names nothing and
/// `rootdelay` holds the root mount) so that the test works on every host, including
/// those where guest user space cannot make system calls (see the module comment).
#[test]
fn builtin_vmm_boots_the_guest_and_hotplugs_a_vcpu_and_a_disk() {
    let ward = Ward::new();
    let class = kvm_class();
    let (kernel, initrd) = assets(&ward);
    let config = HypervisorConfig {
        builtin: BuiltinConfig {
            binary: vmm_binary(&ward),
            ..BuiltinConfig::default()
        },
        ..HypervisorConfig::default()
    };
    let hypervisor = backend_of(BackendKind::Builtin, &config).expect("builtin backend");
    let run_dir = ward.dir.path().join("vm");
    std::fs::create_dir_all(&run_dir).unwrap();
    let vm_config = VmConfig {
        id: "hotplug".into(),
        run_dir: run_dir.clone(),
        kernel,
        initrd,
        // loglevel after the backend's `quiet`: the test reads the kernel's info lines.
        extra_kernel_params: "loglevel=7 rdinit=/ward-no-init root=/dev/ram9 rootdelay=3000".into(),
        vcpus: 1,
        memory_mib: 256,
        shared_dirs: Vec::new(),
    };
    let started = Instant::now();
    let vm = hypervisor.launch(&vm_config).expect("launching ward-vmm");
    let console = vm.console_log.clone();
    let booted = wait_console(&console, "before mounting root device", SLOW);

    hypervisor.set_vcpus(&vm, 2).expect("set_vcpus 2");
    let cpu = wait_console(&console, "CPU1 has been hot-added", SLOW);

    let image = ward.dir.path().join("hot.img");
    std::fs::write(&image, vec![0u8; 4 << 20]).unwrap();
    let disk = DiskSpec {
        id: "hot1".into(),
        path: image,
        read_only: false,
    };
    hypervisor.add_disk(&vm, &disk).expect("add_disk");
    let vda = wait_console(&console, "[vda] 8192 512-byte logical blocks", SLOW);
    eprintln!(
        "builtin (KVM {class}): kernel waiting for root after {booted:?}; CPU1 hot-added \
         {cpu:?} and vda {vda:?} later; {:?} in all",
        started.elapsed()
    );

    hypervisor
        .shutdown(&vm, Duration::from_secs(3))
        .expect("shutting the VM down");
    let needle = run_dir.display().to_string();
    assert_eq!(
        pids_mentioning(&needle),
        Vec::<i64>::new(),
        "processes left"
    );
}

/// `WARD_HYPERVISOR=builtin ward run` of a busybox bundle. Where KVM runs guest kernel
/// code in hardware, the container prints and exits with its own status. Where it is
/// emulated, the guest's first system call fails (module comment): `ward run` must then
/// fail at boot and say why, quoting the guest console.
#[test]
fn builtin_ward_run_prints_and_exits_or_names_the_hosts_limit() {
    let ward = Ward::new();
    vmm_binary(&ward);
    let bundle = ward.bundle("bi", &["sh", "-c", "echo hello from ward-vmm; exit 3"]);
    let out = ward
        .command()
        .env("WARD_HYPERVISOR", "builtin")
        .args(["run", "--bundle", bundle.to_str().unwrap(), "bi"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running ward");
    let stderr = text(&out.stderr);
    match kvm_class() {
        KvmClass::Hardware => {
            assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
            assert_eq!(text(&out.stdout), "hello from ward-vmm\n");
        }
        class => {
            eprintln!("KVM here is {class}: checking that ward names the failure");
            assert!(!out.status.success(), "ward run succeeded on {class} KVM");
            assert!(
                stderr.contains("the VM exited while booting")
                    && stderr.contains("init[1]: segfault"),
                "ward run did not name the guest's failure: {stderr}"
            );
        }
    }
    assert!(!ward.root.join("bi").exists(), "run left its state behind");
}
