//! ward's hypervisor layer: one [`Hypervisor`] trait, its backends, and the pieces every
//! backend shares (the vsock endpoint, the records of the host processes a VM is made of).
//!
//! The runtime knows nothing of QEMU or KVM: it describes the VM it wants in a
//! [`VmConfig`], gets back a [`VmInstance`] it can persist, and later (from another,
//! short-lived `ward` process) hands that record back to the same backend to stop the VM.

pub mod accel;
pub mod builtin;
pub mod config;
mod detach;
pub mod jail;
mod post_mortem;
pub mod process;
pub mod qemu;
mod runfiles;
pub mod vsock;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use accel::{Accel, KvmClass, ProbeReport};
pub use config::{
    AccelChoice, BackendChoice, BackendKind, BuiltinConfig, HypervisorConfig, QemuConfig,
};
pub use post_mortem::PostMortem;
pub use process::ProcessRecord;
pub use vsock::{VsockConnection, VsockEndpoint};

/// A directory of the host shared into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDir {
    /// The tag the guest mounts it by (9p mount_tag, virtio-fs tag): at most 31 bytes.
    pub tag: String,
    pub host_path: PathBuf,
    pub read_only: bool,
}

/// How a backend shares host directories: the file system type the guest mounts, with
/// the share's tag as the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SharedFs {
    /// virtio-9p (QEMU's built-in server).
    #[default]
    #[serde(rename = "9p")]
    NineP,
    /// virtio-fs (virtiofsd over vhost-user).
    Virtiofs,
}

/// A block device to attach to a running VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// 1 to 20 of [A-Za-z0-9_.-]: the name to detach it by, and the serial the guest
    /// sees (/sys/block/vdX/serial).
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
}

/// What the runtime asks for: one microVM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The sandbox's ID; names the VM in logs and process titles.
    pub id: String,
    /// A private host directory for this VM's sockets and logs; it exists and is empty.
    pub run_dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Appended to the backend's own kernel command line.
    pub extra_kernel_params: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub shared_dirs: Vec<SharedDir>,
    /// Room to grow while it runs (a pod's later containers, their disks); None: the VM
    /// keeps its boot size, and a backend may pick a machine that cannot grow.
    pub hotplug: Option<HotplugRoom>,
    /// The host cgroup every process of this VM runs in: one directory per hierarchy
    /// under cgroup v1, one under v2, each process joining all of them before it runs
    /// (see `jail::cgroup`). Empty: they stay in the cgroup of the `ward` that starts them.
    pub host_cgroups: Vec<PathBuf>,
    /// Network cards, each backed by a tap the runtime opened in the pod's namespace.
    pub nics: Vec<Nic>,
}

/// A guest network card whose frames go through a tap device.
#[derive(Debug, Clone)]
pub struct Nic {
    /// The tap (opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR); the VMM gets a copy.
    pub tap: std::sync::Arc<std::os::fd::OwnedFd>,
    pub mac: [u8; 6],
    pub mtu: u32,
}

impl Nic {
    /// `aa:bb:cc:dd:ee:ff`.
    pub fn mac_text(&self) -> String {
        format_mac(&self.mac)
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How far a running VM may be resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotplugRoom {
    /// The most vCPUs it may have.
    pub max_vcpus: u32,
    /// The most memory it may have, MiB.
    pub max_memory_mib: u32,
    /// How many disks may be attached at once.
    pub disk_slots: u32,
    /// Set by the backend: every vCPU is present from boot and "hotplug" is the guest
    /// onlining and offlining them (where the guest cannot take ACPI CPU hotplug: Linux
    /// counts not-yet-plugged CPUs of QEMU's tables only when it detects a hypervisor,
    /// which it does not under TCG).
    #[serde(default)]
    pub cpus_preallocated: bool,
}

impl VmConfig {
    /// Fails naming the first guest asset that is not a file.
    pub fn check_assets(&self) -> Result<()> {
        for (what, path) in [
            ("guest kernel", &self.kernel),
            ("guest initrd", &self.initrd),
        ] {
            if !path.is_file() {
                return Err(Error::MissingAsset {
                    what,
                    path: path.clone(),
                    hint: "build them with `make assets`",
                });
            }
        }
        Ok(())
    }

    /// The same VM with every path absolute: VMMs and helpers run in the run directory.
    pub fn with_absolute_paths(&self) -> Result<VmConfig> {
        let absolute = |p: &std::path::Path| {
            std::path::absolute(p).map_err(|e| Error::io(format!("resolving {}", p.display()), e))
        };
        let mut vm = self.clone();
        vm.run_dir = absolute(&vm.run_dir)?;
        vm.kernel = absolute(&vm.kernel)?;
        vm.initrd = absolute(&vm.initrd)?;
        for dir in &mut vm.shared_dirs {
            dir.host_path = absolute(&dir.host_path)?;
        }
        Ok(vm)
    }
}

/// A running VM as the runtime persists it: enough for any later process to reach the
/// agent and to stop everything the VM is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInstance {
    pub backend: BackendKind,
    /// Every host process of this VM (the VMM, vsock and filesystem helpers), VMM first.
    pub processes: Vec<ProcessRecord>,
    pub vsock: VsockEndpoint,
    /// The VMM's control socket (QMP for qemu).
    pub control_socket: PathBuf,
    /// The guest's serial console, as a file.
    pub console_log: PathBuf,
    /// What the backend decided, for logs and `ward check`: e.g. "qemu microvm tcg".
    pub description: String,
    /// How the VM's shared directories are mounted in the guest.
    #[serde(default)]
    pub shared_fs: SharedFs,
    /// The room it was launched with to grow; None: it keeps its boot size.
    #[serde(default)]
    pub hotplug: Option<HotplugRoom>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found at {path}: {hint}")]
    MissingAsset {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("{binary} is not installed or not executable: {hint}")]
    MissingBinary { binary: String, hint: String },
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move {what} into the sandbox's host cgroup: {source}")]
    CgroupJoin {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited during start-up ({status}); {detail}")]
    HelperDied {
        what: String,
        status: String,
        detail: String,
    },
    #[error("{what} did not become ready within {secs} s; {detail}")]
    Timeout {
        what: String,
        secs: u64,
        detail: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP: {0}")]
    Qmp(String),
    #[error("vsock: {0}")]
    Vsock(String),
    #[error("accelerator probe: {0}")]
    Probe(String),
    #[error("{0}")]
    Config(String),
    #[error("still running after SIGKILL: {0}")]
    Unkillable(String),
    #[error("the {backend} backend cannot {what}")]
    Unsupported {
        backend: BackendKind,
        what: &'static str,
    },
    #[error("cannot {what}: the VM was launched without room to grow (only a sandbox that expects more containers or devices, such as a Kubernetes pod, boots with hotplug slots)")]
    NoHotplugRoom { what: &'static str },
    #[error("VMM API: {0}")]
    Api(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One way of running microVMs.
pub trait Hypervisor {
    fn kind(&self) -> BackendKind;

    /// The accelerator a VM launched now would run with.
    fn accel(&self) -> Result<Accel>;

    /// Starts the VM and returns once its processes run; the guest may still be booting
    /// (the runtime waits for the agent, watching [`Hypervisor::is_running`]).
    fn launch(&self, config: &VmConfig) -> Result<VmInstance>;

    /// Whether the VMM process of `vm` is still alive.
    fn is_running(&self, vm: &VmInstance) -> bool {
        vm.processes.first().is_some_and(|p| p.is_alive())
    }

    /// Stops the VM: asks the VMM to quit, then kills whatever of `vm`'s processes is left
    /// after `grace`, and waits until none is. Succeeds when the VM is already gone.
    fn shutdown(&self, vm: &VmInstance, grace: std::time::Duration) -> Result<()>;

    /// The logs of `vm`'s host processes (the VMM's first), for reports about a VM that
    /// failed; the console is not among them.
    fn logs(&self, _vm: &VmInstance) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Opens a connection to a vsock port of the guest.
    fn connect(&self, vm: &VmInstance, port: u32) -> Result<VsockConnection> {
        vm.vsock.connect(port)
    }

    /// Attaches a block device to the running guest.
    fn add_disk(&self, _vm: &VmInstance, _disk: &DiskSpec) -> Result<()> {
        Err(Error::Unsupported {
            backend: self.kind(),
            what: "hotplug block devices",
        })
    }

    /// Detaches the block device attached as `id`.
    fn remove_disk(&self, _vm: &VmInstance, _id: &str) -> Result<()> {
        Err(Error::Unsupported {
            backend: self.kind(),
            what: "hot-unplug block devices",
        })
    }

    /// Attaches network card `nic` to the running guest, named `id` (1 to 20 of
    /// [A-Za-z0-9_.-]) for its removal. The VMM gets its own copy of the tap.
    fn add_nic(&self, _vm: &VmInstance, _id: &str, _nic: &Nic) -> Result<()> {
        Err(Error::Unsupported {
            backend: self.kind(),
            what: "hotplug network cards",
        })
    }

    /// Detaches the network card attached as `id`; returns once the guest has let go of it.
    fn remove_nic(&self, _vm: &VmInstance, _id: &str) -> Result<()> {
        Err(Error::Unsupported {
            backend: self.kind(),
            what: "hot-unplug network cards",
        })
    }

    /// Brings the guest to `count` online vCPUs.
    fn set_vcpus(&self, _vm: &VmInstance, _count: u32) -> Result<()> {
        Err(Error::Unsupported {
            backend: self.kind(),
            what: "hotplug vCPUs",
        })
    }

    /// Brings the guest's memory to `mib` (hot-added in whole blocks); returns the memory
    /// it has afterwards, which may stay above `mib` where memory cannot be taken back.
    fn set_memory(&self, _vm: &VmInstance, _mib: u32) -> Result<u32> {
        Err(Error::Unsupported {
            backend: self.kind(),
            what: "hotplug memory",
        })
    }
}

/// The last `lines` lines of the guest console, for errors about a VM that died.
pub fn console_tail(vm_console: &std::path::Path, lines: usize) -> String {
    match std::fs::read(vm_console) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(console log {} unreadable: {e})", vm_console.display()),
    }
}

/// The environment variable that overrides the configured backend.
pub const BACKEND_ENV: &str = "WARD_HYPERVISOR";

/// Decides the backend for a new VM: WARD_HYPERVISOR, else the configuration; `auto`
/// takes the builtin VMM only where KVM runs guest kernel code at hardware speed (it has
/// no emulator to fall back on) and ward-vmm is installed.
pub fn choose_backend(config: &HypervisorConfig) -> Result<BackendKind> {
    let choice = match std::env::var(BACKEND_ENV) {
        Ok(value) if !value.is_empty() => value
            .parse::<BackendChoice>()
            .map_err(|e| Error::Config(format!("{BACKEND_ENV}: {e}")))?,
        _ => config.backend,
    };
    Ok(match choice {
        BackendChoice::Qemu => BackendKind::Qemu,
        BackendChoice::Builtin => BackendKind::Builtin,
        BackendChoice::Auto => {
            let hardware = matches!(
                accel::resolve(AccelChoice::Auto, &config.cache_dir),
                Ok(Accel::Kvm)
            );
            if hardware && builtin::find_vmm(&config.builtin.binary).is_some() {
                BackendKind::Builtin
            } else {
                BackendKind::Qemu
            }
        }
    })
}

/// Builds the backend a new VM gets (see [`choose_backend`]).
pub fn backend(config: &HypervisorConfig) -> Result<Box<dyn Hypervisor>> {
    backend_of(choose_backend(config)?, config)
}

/// Builds backend `kind`: for a VM that runs already, the kind its record names.
pub fn backend_of(kind: BackendKind, config: &HypervisorConfig) -> Result<Box<dyn Hypervisor>> {
    match kind {
        BackendKind::Qemu => Ok(Box::new(
            qemu::Qemu::new(config.qemu.clone(), config.accel)
                .with_cache_dir(config.cache_dir.clone()),
        )),
        BackendKind::Builtin => Ok(Box::new(builtin::Builtin::new(config.builtin.clone()))),
    }
}
