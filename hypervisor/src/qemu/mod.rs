//! The qemu backend: one qemu-system-x86_64 per VM (microvm or q35, KVM or TCG), with
//! vsock from the kernel's vhost-vsock or, where that is missing, vhost-device-vsock.

pub mod cmdline;
mod launch;
pub mod paths;
pub mod qmp;
mod shutdown;
pub mod tsc;
pub mod vhost_vsock;
pub mod vsock_helper;

use std::path::PathBuf;
use std::time::Duration;

use crate::accel::DEFAULT_CACHE_DIR;
use crate::{
    Accel, AccelChoice, BackendKind, Hypervisor, QemuConfig, Result, VmConfig, VmInstance,
};

pub use cmdline::Machine;

pub struct Qemu {
    config: QemuConfig,
    accel: AccelChoice,
    cache_dir: PathBuf,
    /// How long QEMU may take to answer on QMP after it starts.
    start_timeout: Duration,
}

impl Qemu {
    pub fn new(config: QemuConfig, accel: AccelChoice) -> Self {
        Qemu {
            config,
            accel,
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            start_timeout: Duration::from_secs(30),
        }
    }

    /// Where host facts (accelerator probe, TSC frequency) are cached.
    pub fn with_cache_dir(mut self, cache_dir: PathBuf) -> Self {
        self.cache_dir = cache_dir;
        self
    }
}

impl Hypervisor for Qemu {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn accel(&self) -> Result<Accel> {
        crate::accel::resolve(self.accel, &self.cache_dir)
    }

    fn launch(&self, config: &VmConfig) -> Result<VmInstance> {
        launch::launch(self, config)
    }

    fn shutdown(&self, vm: &VmInstance, grace: Duration) -> Result<()> {
        shutdown::shutdown(vm, grace)
    }
}

#[cfg(test)]
mod tests;
