//! The builtin backend: ward's own VMM, `ward-vmm` (hypervisor/vmm), one process per VM,
//! driven over its JSON control socket. Shared directories go through virtio-fs (one
//! virtiofsd each); vsock is ward-vmm's own device with the same hybrid Unix-socket
//! protocol as the qemu backend's helper, so the runtime's agent client cannot tell the
//! backends apart.

pub mod api;
pub mod cmdline;
pub mod paths;
pub mod virtiofsd;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::detach::{find_binary, spawn_detached, CgroupJoin, Privileges, Program};
use crate::runfiles;
use crate::{
    Accel, BackendKind, BuiltinConfig, DiskSpec, Error, Hypervisor, Nic, ProcessRecord, Result,
    SharedFs, VmConfig, VmInstance, VsockEndpoint,
};

use api::ApiClient;
use paths::RunPaths;

/// How long ward-vmm may take to answer on its control socket after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The most one API exchange may take; hotplug waits for the guest's answer.
const API_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the guest may take to eject a disk's or network card's slot once asked.
const EJECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a process gets between SIGTERM and SIGKILL once the grace is over.
const TERM_GRACE: Duration = Duration::from_secs(1);

pub struct Builtin {
    config: BuiltinConfig,
}

impl Builtin {
    pub fn new(config: BuiltinConfig) -> Builtin {
        Builtin { config }
    }

    fn api(&self, vm: &VmInstance) -> Result<ApiClient> {
        ApiClient::connect(&vm.control_socket, API_TIMEOUT)
    }
}

/// Finds ward-vmm: a path as given; a bare name next to the running program first (a
/// build tree, or both installed side by side), then in PATH.
pub fn find_vmm(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() == 1 {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(binary)));
        if let Some(found) = beside.and_then(|p| find_binary(&p)) {
            return Some(found);
        }
    }
    find_binary(binary)
}

impl Hypervisor for Builtin {
    fn kind(&self) -> BackendKind {
        BackendKind::Builtin
    }

    /// ward-vmm has no emulator: KVM or nothing.
    fn accel(&self) -> Result<Accel> {
        Ok(Accel::Kvm)
    }

    fn launch(&self, vm: &VmConfig) -> Result<VmInstance> {
        vm.check_assets()?;
        let binary = find_vmm(&self.config.binary).ok_or_else(|| Error::MissingBinary {
            binary: self.config.binary.display().to_string(),
            hint: "build it with `cargo build -p ward-vmm` and install it next to ward".into(),
        })?;
        let vm = &vm.with_absolute_paths()?;
        let paths = RunPaths::new(&vm.run_dir);
        paths.check_socket_lengths(vm.shared_dirs.len())?;
        paths.remove_sockets(vm.shared_dirs.len())?;

        // virtiofsd and ward-vmm join the sandbox's host cgroup before they run.
        let cgroup = CgroupJoin::open(&vm.host_cgroups)?;
        let (mut processes, fs_sockets) =
            virtiofsd::start_all(&self.config.virtiofsd, &vm.shared_dirs, &paths, &cgroup)?;
        let args = cmdline::vmm_args(vm, &paths, &fs_sockets);
        let started = (|| {
            // No capabilities: ward-vmm opens only what root owns (/dev/kvm, its run
            // directory, the guest assets, disk images ward created) and has no use for
            // any privilege; with no_new_privs it could not regain one by exec either (its
            // seccomp filters forbid exec outright).
            let mut program = Program::new("ward-vmm", &binary, &args, &paths.dir, &paths.vmm_log)?
                .privileges(Privileges::None)
                .cgroup(&cgroup)?;
            // The taps, as descriptors 3, 4, ... (cmdline::vmm_args names them so).
            for (n, nic) in vm.nics.iter().enumerate() {
                let tap = nic.tap.try_clone().map_err(|source| Error::Spawn {
                    what: "ward-vmm (copying a tap descriptor)".into(),
                    source,
                })?;
                if program.pass_fd(tap)? != cmdline::nic_fd(n) {
                    return Err(Error::Config("tap descriptor misnumbered".into()));
                }
            }
            let pid = spawn_detached(&program)?;
            ProcessRecord::of("ward-vmm", pid).ok_or_else(|| vmm_died(&paths))
        })();
        let vmm = match started {
            Ok(vmm) => vmm,
            Err(e) => {
                virtiofsd::stop(&processes);
                return Err(e);
            }
        };
        processes.insert(0, vmm.clone());
        if let Err(e) = wait_for_api(&paths, &vmm) {
            runfiles::stop_all(&processes, TERM_GRACE);
            return Err(e);
        }
        Ok(VmInstance {
            backend: BackendKind::Builtin,
            processes,
            vsock: VsockEndpoint::Hybrid {
                uds: paths.vsock.clone(),
            },
            control_socket: paths.api.clone(),
            console_log: paths.console.clone(),
            description: "builtin ward-vmm kvm".into(),
            shared_fs: SharedFs::Virtiofs,
            hotplug: None,
        })
    }

    fn logs(&self, vm: &VmInstance) -> Vec<PathBuf> {
        let Some(paths) = RunPaths::from_control_socket(&vm.control_socket) else {
            return Vec::new();
        };
        let file_servers = vm
            .processes
            .iter()
            .filter(|p| p.name == "virtiofsd")
            .count();
        std::iter::once(paths.vmm_log.clone())
            .chain((0..file_servers).map(|n| paths.fs_log(n)))
            .collect()
    }

    fn shutdown(&self, vm: &VmInstance, grace: Duration) -> Result<()> {
        let deadline = Instant::now() + grace;
        if let Some(vmm) = vm.processes.first().filter(|p| p.is_alive()) {
            // A gone or wedged socket just means going straight to signals.
            let timeout = grace.clamp(Duration::from_millis(100), Duration::from_secs(2));
            if let Ok(mut api) = ApiClient::connect(&vm.control_socket, timeout) {
                let _ = api.shutdown();
            }
            vmm.wait_gone(deadline.saturating_duration_since(Instant::now()));
        }
        let survivors = runfiles::stop_all(&vm.processes, TERM_GRACE);
        if let Some(paths) = RunPaths::from_control_socket(&vm.control_socket) {
            // Shared directories' sockets are virtiofsd's, gone with it; the rest are ours.
            paths.remove_sockets(0)?;
        }
        if survivors.is_empty() {
            Ok(())
        } else {
            Err(Error::Unkillable(survivors.join(", ")))
        }
    }

    fn add_disk(&self, vm: &VmInstance, disk: &DiskSpec) -> Result<()> {
        let path = std::path::absolute(&disk.path)
            .map_err(|e| Error::io(format!("resolving {}", disk.path.display()), e))?;
        self.api(vm)?.add_disk(&disk.id, &path, disk.read_only)
    }

    /// Asks the guest to eject the disk's slot and returns once it has (the VMM then
    /// drops the device). The guest refuses while the disk's driver holds it: the agent
    /// releases it first (`ReleaseDisk`).
    fn remove_disk(&self, vm: &VmInstance, id: &str) -> Result<()> {
        let mut api = self.api(vm)?;
        api.remove_disk(id)?;
        wait_ejected(
            || api.disk_ids(),
            &format!("disk {id:?}"),
            id,
            "the guest did not eject its slot; it refuses while a driver holds the disk \
             (the agent's ReleaseDisk lets go of it)",
        )
    }

    fn add_nic(&self, vm: &VmInstance, id: &str, nic: &Nic) -> Result<()> {
        use std::os::fd::AsFd;
        self.api(vm)?
            .add_net(id, &nic.mac, nic.mtu, nic.tap.as_fd())
    }

    /// Asks the guest to eject the card's slot and returns once it has (the VMM then drops
    /// the device and closes its copy of the tap).
    fn remove_nic(&self, vm: &VmInstance, id: &str) -> Result<()> {
        let mut api = self.api(vm)?;
        api.remove_net(id)?;
        wait_ejected(
            || api.net_ids(),
            &format!("network card {id:?}"),
            id,
            "the guest did not eject its slot (its virtio-net driver did not let go of the \
             card)",
        )
    }

    fn set_vcpus(&self, vm: &VmInstance, count: u32) -> Result<()> {
        self.api(vm)?.set_vcpus(count)
    }
}

/// Polls `ids` until `id` is gone from it: the guest ejected the device's slot. Bounded by
/// EJECT_TIMEOUT; `what` and `detail` word the timeout.
fn wait_ejected(
    mut ids: impl FnMut() -> Result<Vec<String>>,
    what: &str,
    id: &str,
    detail: &str,
) -> Result<()> {
    let started = Instant::now();
    while ids()?.iter().any(|d| d == id) {
        if started.elapsed() > EJECT_TIMEOUT {
            return Err(Error::Timeout {
                what: format!("the guest's eject of {what}"),
                secs: EJECT_TIMEOUT.as_secs(),
                detail: detail.into(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits until ward-vmm answers a ping, or has exited, or START_TIMEOUT passed.
fn wait_for_api(paths: &RunPaths, vmm: &ProcessRecord) -> Result<()> {
    let started = Instant::now();
    let mut last = String::from("no socket yet");
    loop {
        if !vmm.is_alive() {
            return Err(vmm_died(paths));
        }
        if paths.api.exists() {
            match ApiClient::connect(&paths.api, Duration::from_secs(2)).and_then(|mut a| a.ping())
            {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(Error::Timeout {
                what: "ward-vmm".into(),
                secs: START_TIMEOUT.as_secs(),
                detail: format!(
                    "its control socket {} did not answer ({last}); its log {} ends with:\n{}",
                    paths.api.display(),
                    paths.vmm_log.display(),
                    crate::console_tail(&paths.vmm_log, 20)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn vmm_died(paths: &RunPaths) -> Error {
    runfiles::helper_died("ward-vmm", "exited", &paths.vmm_log)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::SharedFs;

    fn instance(control_socket: PathBuf) -> VmInstance {
        VmInstance {
            backend: BackendKind::Builtin,
            processes: Vec::new(),
            vsock: VsockEndpoint::Hybrid {
                uds: control_socket.with_file_name("vsock.sock"),
            },
            console_log: control_socket.with_file_name("console.log"),
            control_socket,
            description: "test".into(),
            shared_fs: SharedFs::Virtiofs,
            hotplug: None,
        }
    }

    /// add_nic sends the tap; remove_nic asks, then polls `info` until the card is gone.
    #[test]
    fn nics_are_added_and_removed_once_the_guest_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let vm = instance(path);
        let removing = json!({"ok": true, "nets": [{"id": "n1", "state": "removing"}]});
        // One connection per call, served in turn.
        let server = std::thread::spawn(move || {
            let add =
                api::tests::fake_vmm(listener.try_clone().unwrap(), vec![json!({"ok": true})])
                    .join()
                    .unwrap();
            let remove = api::tests::fake_vmm(
                listener,
                vec![
                    json!({"ok": true, "pending": true}),
                    removing.clone(),
                    removing,
                    json!({"ok": true, "nets": [{"id": null}]}),
                ],
            )
            .join()
            .unwrap();
            (add, remove)
        });
        let (_r, w) = nix::unistd::pipe().unwrap();
        let nic = Nic {
            tap: Arc::new(w),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1400,
        };
        let builtin = Builtin::new(BuiltinConfig::default());
        builtin.add_nic(&vm, "n1", &nic).unwrap();
        builtin.remove_nic(&vm, "n1").unwrap();
        let (added, removed) = server.join().unwrap();
        assert_eq!(
            added[0].0,
            json!({"op": "add_net", "id": "n1", "mac": "02:00:00:00:00:01", "mtu": 1400})
        );
        assert_eq!(added[0].1.len(), 1, "the tap came with add_net");
        let ops: Vec<&str> = removed
            .iter()
            .map(|(l, _)| l["op"].as_str().unwrap())
            .collect();
        assert_eq!(ops, vec!["remove_net", "info", "info", "info"]);
        assert!(removed.iter().all(|(_, fds)| fds.is_empty()));
    }
}
