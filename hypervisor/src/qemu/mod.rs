//! The qemu backend: one qemu-system-x86_64 per VM (microvm or q35, KVM or TCG), with
//! vsock from the kernel's vhost-vsock or, where that is missing, vhost-device-vsock.

pub mod cmdline;
mod hotplug;
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
    Accel, AccelChoice, BackendKind, DiskSpec, Hypervisor, QemuConfig, Result, VmConfig, VmInstance,
};

pub use cmdline::Machine;
use paths::RunPaths;

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

    fn logs(&self, vm: &VmInstance) -> Vec<PathBuf> {
        RunPaths::from_control_socket(&vm.control_socket)
            .map(|paths| vec![paths.qemu_log, paths.vsock_log])
            .unwrap_or_default()
    }

    fn shutdown(&self, vm: &VmInstance, grace: Duration) -> Result<()> {
        shutdown::shutdown(vm, grace)
    }

    fn add_disk(&self, vm: &VmInstance, disk: &DiskSpec) -> Result<()> {
        self.require_hotplug(vm, "hotplug block devices")?;
        hotplug::add_disk(vm, disk)
    }

    fn remove_disk(&self, vm: &VmInstance, id: &str) -> Result<()> {
        self.require_hotplug(vm, "hot-unplug block devices")?;
        hotplug::remove_disk(vm, id)
    }

    fn add_nic(&self, vm: &VmInstance, id: &str, nic: &crate::Nic) -> Result<()> {
        self.require_hotplug(vm, "hotplug network cards")?;
        hotplug::add_nic(vm, id, nic)
    }

    fn remove_nic(&self, vm: &VmInstance, id: &str) -> Result<()> {
        self.require_hotplug(vm, "hot-unplug network cards")?;
        hotplug::remove_nic(vm, id)
    }

    fn set_vcpus(&self, vm: &VmInstance, count: u32) -> Result<()> {
        self.require_hotplug(vm, "hotplug vCPUs")?;
        match vm.hotplug {
            // Every vCPU is there already: the guest onlines what it is given.
            Some(room) if room.cpus_preallocated => {
                if count == 0 || count > room.max_vcpus {
                    return Err(crate::Error::Config(format!(
                        "the VM can have 1 to {} vCPUs, not {count}",
                        room.max_vcpus
                    )));
                }
                Ok(())
            }
            _ => hotplug::set_vcpus(vm, count),
        }
    }

    fn set_memory(&self, vm: &VmInstance, mib: u32) -> Result<u32> {
        self.require_hotplug(vm, "hotplug memory")?;
        hotplug::set_memory(vm, mib)
    }
}

impl Qemu {
    /// Only a VM launched with hotplug room (a q35 machine with CPU and memory slots and
    /// root ports) can grow.
    fn require_hotplug(&self, vm: &VmInstance, what: &'static str) -> Result<()> {
        match vm.hotplug {
            Some(_) => Ok(()),
            None => Err(crate::Error::NoHotplugRoom { what }),
        }
    }
}

#[cfg(test)]
mod tests;
