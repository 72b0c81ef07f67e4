//! The hypervisor part of ward's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Qemu,
}

/// Which accelerator a backend may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM where the probe says guest ring-0 code runs at hardware speed, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QemuConfig {
    /// The QEMU binary; a bare name is looked up in PATH.
    pub binary: PathBuf,
    /// QEMU machine type: "microvm" or "q35".
    pub machine: String,
    /// vhost-device-vsock, used when /dev/vhost-vsock is not usable.
    pub vsock_helper: PathBuf,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            machine: "microvm".to_string(),
            vsock_helper: PathBuf::from("vhost-device-vsock"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HypervisorConfig {
    pub backend: BackendKind,
    pub accel: AccelChoice,
    pub qemu: QemuConfig,
    /// Where host facts are cached (the accelerator probe, the TSC frequency).
    pub cache_dir: PathBuf,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        HypervisorConfig {
            backend: BackendKind::Qemu,
            accel: AccelChoice::Auto,
            qemu: QemuConfig::default(),
            cache_dir: PathBuf::from(crate::accel::DEFAULT_CACHE_DIR),
        }
    }
}
