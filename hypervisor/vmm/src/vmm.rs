//! The assembled machine: guest memory, the KVM VM, legacy and virtio devices on their
//! buses, the vCPU threads, and the main thread's event loop that waits for the guest
//! to stop (or for API requests) and tears everything down.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use slog::{info, Logger};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::arch::x86_64::layout;
use crate::boot;
use crate::bus::{self, Bus};
use crate::config::DeviceConfig;
use crate::devices::legacy::{i8042::I8042, serial::SerialDevice};
use crate::vstate::memory::{self, GuestRam};
use crate::vstate::vcpu::{self, ExitReason, ExitSignal, Vcpu, VcpuContext, VcpuHandle};
use crate::vstate::vm::{self, Vm};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Memory(#[from] memory::Error),
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error(transparent)]
    Vcpu(#[from] vcpu::Error),
    #[error(transparent)]
    Boot(#[from] boot::Error),
    #[error(transparent)]
    Bus(#[from] bus::Error),
    #[error(transparent)]
    Serial(#[from] crate::devices::legacy::serial::Error),
    #[error("reading KVM's supported CPUID: {0}")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("{vcpus} vCPUs requested, {max} at most (1 to 255, and no more than --max-vcpus)")]
    VcpuCount { vcpus: u32, max: u32 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the test payload into guest memory: {0}")]
    Payload(#[source] vm_memory::GuestMemoryError),
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// What the guest runs.
pub enum Payload {
    /// A Linux kernel (ELF vmlinux or bzImage) with optional initrd and extra parameters.
    Linux {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        /// Appended to ward-vmm's own parameters.
        cmdline: String,
    },
    /// Raw 64-bit machine code at `addr` (long mode, identity-mapped first GiB): for
    /// testing the vCPU, bus and device paths without a kernel.
    Raw { code: Vec<u8>, addr: u64 },
}

pub struct VmmConfig {
    pub payload: Payload,
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub memory_mib: u32,
    pub serial_log: PathBuf,
    /// The control socket; created before any vCPU runs.
    pub api_socket: Option<PathBuf>,
    pub devices: DeviceConfig,
    /// Describe the machine with ACPI tables (else the guest gets `acpi=off` and the
    /// virtio devices on its command line).
    pub acpi: bool,
}

pub struct Vmm {
    log: Logger,
    vm: Vm,
    ram: GuestRam,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<ExitSignal>,
    cpuid: CpuId,
    max_vcpus: u32,
    vcpus: Vec<VcpuHandle>,
    /// Boot vCPU, configured but not yet started.
    pending: Vec<Vcpu>,
}

impl Vmm {
    /// Builds the machine; nothing runs until [`Vmm::run`].
    pub fn new(config: VmmConfig, log: Logger) -> Result<Self, Error> {
        if config.vcpus == 0 || config.vcpus > config.max_vcpus || config.max_vcpus > 255 {
            return Err(Error::VcpuCount {
                vcpus: config.vcpus,
                max: config.max_vcpus.min(255),
            });
        }
        let ram = GuestRam::new(u64::from(config.memory_mib))?;
        let vm = Vm::new()?;
        vm.register_memory(&ram.mem)?;
        let exit = Arc::new(ExitSignal::new().map_err(Error::io("creating the exit eventfd"))?);

        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let serial = SerialDevice::new(&config.serial_log)?;
        vm.register_irqfd(serial.irq_evt(), layout::IRQ_SERIAL)?;
        pio.insert(
            "serial",
            u64::from(layout::SERIAL_PORT_BASE),
            u64::from(layout::SERIAL_PORT_SIZE),
            Arc::new(Mutex::new(serial)),
        )?;
        pio.insert(
            "i8042",
            u64::from(layout::I8042_PORT_BASE),
            u64::from(layout::I8042_PORT_SIZE),
            Arc::new(Mutex::new(I8042::new(exit.clone()))),
        )?;

        let cpuid = vm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::Cpuid)?;

        let mut vmm = Vmm {
            log,
            vm,
            ram,
            pio,
            mmio,
            exit,
            cpuid,
            max_vcpus: config.max_vcpus,
            vcpus: Vec::new(),
            pending: Vec::new(),
        };

        let entry = match &config.payload {
            Payload::Linux {
                kernel,
                initrd,
                cmdline,
            } => {
                let cmdline = boot::cmdline::compose(cmdline);
                info!(vmm.log, "loading the guest"; "kernel" => %kernel.display(), "cmdline" => &cmdline);
                boot::load(
                    &vmm.ram.mem,
                    &vmm.ram.ranges,
                    &boot::BootSource {
                        kernel,
                        initrd: initrd.as_deref(),
                        cmdline: &cmdline,
                    },
                    None,
                )?
            }
            Payload::Raw { code, addr } => {
                use vm_memory::{Bytes, GuestAddress};
                vmm.ram
                    .mem
                    .write_slice(code, GuestAddress(*addr))
                    .map_err(Error::Payload)?;
                boot::BootEntry {
                    addr: *addr,
                    mode: crate::arch::x86_64::regs::EntryMode::Linux64 {
                        zero_page: layout::ZERO_PAGE_START,
                    },
                }
            }
        };

        for id in 0..config.vcpus {
            let vcpu = Vcpu::new(&vmm.vm, id, &vmm.cpuid, vmm.max_vcpus)?;
            if id == 0 {
                vcpu.set_boot_state(&vmm.ram.mem, entry.addr, entry.mode)?;
            }
            vmm.pending.push(vcpu);
        }
        Ok(vmm)
    }

    fn vcpu_context(&self) -> VcpuContext {
        VcpuContext {
            pio: self.pio.clone(),
            mmio: self.mmio.clone(),
            exit: self.exit.clone(),
            log: self.log.clone(),
        }
    }

    /// Runs the guest until it stops; returns why.
    pub fn run(mut self) -> Result<ExitReason, Error> {
        vcpu::install_kick_handler()?;
        let epoll = Epoll::new().map_err(Error::io("creating the main epoll"))?;
        const EXIT_TOKEN: u64 = 1;
        epoll
            .ctl(
                ControlOperation::Add,
                self.exit.eventfd().as_raw_fd(),
                EpollEvent::new(EventSet::IN, EXIT_TOKEN),
            )
            .map_err(Error::io("watching the exit eventfd"))?;

        let ctx = self.vcpu_context();
        for vcpu in std::mem::take(&mut self.pending) {
            let handle = vcpu.start(ctx.clone())?;
            self.vcpus.push(handle);
        }
        info!(self.log, "guest started"; "vcpus" => self.vcpus.len(), "memory_mib" => self.ram.size() >> 20);

        let mut events = vec![EpollEvent::default(); 8];
        let reason = loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break ExitReason::Error(format!("main loop epoll_wait: {e}")),
            };
            if events[..n].iter().any(|e| e.data() == EXIT_TOKEN) {
                let _ = self.exit.eventfd().read();
                if let Some(reason) = self.exit.reason() {
                    break reason;
                }
            }
        };
        self.stop_vcpus();
        info!(self.log, "guest stopped"; "reason" => format!("{reason:?}"));
        Ok(reason)
    }

    fn stop_vcpus(&mut self) {
        for h in &self.vcpus {
            h.kick();
        }
        for h in self.vcpus.drain(..) {
            let _ = h.stop();
        }
    }

    /// The serial log path is kept by the device; expose the layout for tests.
    pub fn guest_memory(&self) -> &memory::GuestMemoryMmap {
        &self.ram.mem
    }
}

/// Removes `path` if it exists.
pub fn remove_file_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
