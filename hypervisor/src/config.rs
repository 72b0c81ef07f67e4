//! The hypervisor part of ward's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The backend a VM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Qemu,
    Builtin,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Builtin => "builtin",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backend the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// `builtin` where KVM runs guest kernel code at hardware speed and ward-vmm is
    /// installed, `qemu` otherwise.
    #[default]
    Auto,
    Qemu,
    Builtin,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "qemu" => Ok(BackendChoice::Qemu),
            "builtin" => Ok(BackendChoice::Builtin),
            other => Err(format!(
                "unknown hypervisor backend {other:?}: expected auto, qemu or builtin"
            )),
        }
    }
}

/// ward's own VMM and its helpers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuiltinConfig {
    /// The ward-vmm binary; a bare name is looked for next to the running ward, then in
    /// PATH.
    pub binary: PathBuf,
    /// virtiofsd, which serves each shared directory over vhost-user.
    pub virtiofsd: PathBuf,
}

impl Default for BuiltinConfig {
    fn default() -> Self {
        BuiltinConfig {
            binary: PathBuf::from("ward-vmm"),
            virtiofsd: PathBuf::from("virtiofsd"),
        }
    }
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
    /// Overridden by the environment variable WARD_HYPERVISOR.
    pub backend: BackendChoice,
    pub accel: AccelChoice,
    pub qemu: QemuConfig,
    pub builtin: BuiltinConfig,
    /// Where host facts are cached (the accelerator probe, the TSC frequency).
    pub cache_dir: PathBuf,
    /// Refuse to start a VM that would run under TCG. TCG is not a security boundary
    /// (QEMU's security policy does not treat it as one): without this, ward starts such
    /// a VM with a warning.
    pub require_kvm: bool,
}

impl Default for HypervisorConfig {
    fn default() -> Self {
        HypervisorConfig {
            backend: BackendChoice::Auto,
            accel: AccelChoice::Auto,
            qemu: QemuConfig::default(),
            builtin: BuiltinConfig::default(),
            cache_dir: PathBuf::from(crate::accel::DEFAULT_CACHE_DIR),
            require_kvm: false,
        }
    }
}
