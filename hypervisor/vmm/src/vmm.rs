//! The assembled machine: guest memory, the KVM VM, legacy, virtio and hotplug devices
//! on their buses, the vCPU threads, and the main thread's event loop that serves the
//! API, acts on guest ejects, waits for the guest to stop and tears everything down.

mod control;
mod hotplug;
mod virtio;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use slog::{info, warn, Logger};
use vm_memory::GuestMemoryAtomic;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi;
use crate::api::{self, ApiServer};
use crate::arch::x86_64::{layout, regs::EntryMode};
use crate::boot;
use crate::bus::{self, Bus};
use crate::config::DeviceConfig;
use crate::devices::hotplug::cpu::{SelectorBlock, Shared, UnitState};
use crate::devices::hotplug::ged::{Ged, GedNotifier};
use crate::devices::legacy::{i8042::I8042, serial::SerialDevice};
use crate::devices::virtio::GuestMem;
use crate::seccomp::{self, ThreadClass};
use crate::vstate::memory::{self, GuestRam};
use crate::vstate::vcpu::{self, ExitReason, ExitSignal, Vcpu, VcpuContext, VcpuHandle};
use crate::vstate::vm::{self, Vm};

use virtio::{VirtioKind, VirtioSlot};

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
    #[error(transparent)]
    Acpi(#[from] acpi::Error),
    #[error(transparent)]
    Api(#[from] api::Error),
    #[error(transparent)]
    Virtio(#[from] virtio::Error),
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
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
    #[error("{0}")]
    Unsupported(String),
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
    /// virtio devices on its command line, one vCPU and no hotplug).
    pub acpi: bool,
    /// The host's KVM emulates guest ring 0 (PVM): see `boot::cmdline::EMULATED_RING0`.
    /// Also applied when `cpuid::looks_ring0_emulated` says so.
    pub emulated_ring0: bool,
}

/// virtio-mmio slots kept free for `add_disk`.
const HOTPLUG_SLOTS: u32 = 8;

/// The CPU and slot hotplug state the guest's AML reads, and what to tell it.
struct Hotplug {
    ged: GedNotifier,
    cpus: Arc<Mutex<Shared>>,
    cpu_eject: Arc<EventFd>,
    slots: Arc<Mutex<Shared>>,
    slot_eject: Arc<EventFd>,
}

pub struct Vmm {
    log: Logger,
    vm: Vm,
    ram: GuestRam,
    mem: GuestMem,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<ExitSignal>,
    cpuid: CpuId,
    max_vcpus: u32,
    /// Running vCPU threads, by APIC ID.
    vcpus: Vec<Option<VcpuHandle>>,
    /// Stopped vCPUs (not started yet, or ejected), by APIC ID.
    parked: Vec<Option<Vcpu>>,
    /// Occupied virtio-mmio slots.
    virtio: Vec<VirtioSlot>,
    first_hotplug_slot: u32,
    hotplug: Option<Hotplug>,
    api: Option<ApiServer>,
    api_path: Option<PathBuf>,
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
        if !config.acpi && config.vcpus > 1 {
            return Err(Error::Unsupported(
                "without ACPI the guest finds only vCPU 0: use --vcpus 1 or drop --no-acpi".into(),
            ));
        }
        let ram = GuestRam::new(u64::from(config.memory_mib))?;
        let mem = GuestMemoryAtomic::new(ram.mem.clone());
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
            mem,
            pio,
            mmio,
            exit,
            cpuid,
            max_vcpus: config.max_vcpus,
            vcpus: (0..config.max_vcpus).map(|_| None).collect(),
            parked: (0..config.max_vcpus).map(|_| None).collect(),
            virtio: Vec::new(),
            first_hotplug_slot: 0,
            hotplug: None,
            api: None,
            api_path: config.api_socket.clone(),
        };

        vmm.add_boot_devices(&config.devices)?;
        if config.acpi {
            vmm.add_hotplug_devices(config.vcpus)?;
        }

        let entry = match &config.payload {
            Payload::Linux {
                kernel,
                initrd,
                cmdline,
            } => vmm.load_linux(&config, kernel, initrd.as_deref(), cmdline)?,
            Payload::Raw { code, addr } => {
                use vm_memory::{Bytes, GuestAddress};
                vmm.ram
                    .mem
                    .write_slice(code, GuestAddress(*addr))
                    .map_err(Error::Payload)?;
                boot::BootEntry {
                    addr: *addr,
                    mode: EntryMode::Linux64 {
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
            vmm.parked[id as usize] = Some(vcpu);
        }
        Ok(vmm)
    }

    fn load_linux(
        &mut self,
        config: &VmmConfig,
        kernel: &std::path::Path,
        initrd: Option<&std::path::Path>,
        extra: &str,
    ) -> Result<boot::BootEntry, Error> {
        let mut machine: Vec<String> = Vec::new();
        let detected = crate::arch::x86_64::cpuid::looks_ring0_emulated(&self.cpuid);
        if detected && !config.emulated_ring0 {
            warn!(self.log, "this host's KVM seems to emulate guest ring 0 (PVM-like): guest kernel code will be slow; adding the kernel parameters it needs");
        }
        if config.emulated_ring0 || detected {
            machine.push(boot::cmdline::EMULATED_RING0.to_string());
        }
        let rsdp = if config.acpi {
            let cfg = acpi::DsdtConfig {
                boot_vcpus: config.vcpus,
                max_vcpus: config.max_vcpus,
                virtio: self
                    .virtio
                    .iter()
                    .map(|s| acpi::VirtioAcpiDevice {
                        base: s.base,
                        irq: s.irq,
                    })
                    .collect(),
                hotplug_slots: HOTPLUG_SLOTS,
            };
            Some(acpi::write_tables(&self.ram.mem, &cfg)?)
        } else {
            // No tables: the guest must not look for them, and finds the virtio devices
            // on its command line.
            machine.push("acpi=off".into());
            for s in &self.virtio {
                machine.push(format!("virtio_mmio.device=4K@{:#x}:{}", s.base, s.irq));
            }
            None
        };
        let refs: Vec<&str> = machine.iter().map(String::as_str).collect();
        let cmdline = boot::cmdline::compose(&refs, extra);
        info!(self.log, "loading the guest"; "kernel" => %kernel.display(), "cmdline" => &cmdline);
        Ok(boot::load(
            &self.ram.mem,
            &self.ram.ranges,
            &boot::BootSource {
                kernel,
                initrd,
                cmdline: &cmdline,
            },
            rsdp,
        )?)
    }

    fn add_boot_devices(&mut self, devices: &DeviceConfig) -> Result<(), Error> {
        let mut kinds = Vec::new();
        if let Some(v) = &devices.vsock {
            kinds.push(VirtioKind::Vsock(v.clone()));
        }
        crate::config::check_nets(&devices.nets).map_err(Error::Unsupported)?;
        for n in &devices.nets {
            kinds.push(VirtioKind::net(n)?);
        }
        for d in &devices.disks {
            if devices.disks.iter().filter(|o| o.id == d.id).count() > 1 {
                return Err(Error::Unsupported(format!("disk id {:?} used twice", d.id)));
            }
            kinds.push(VirtioKind::Block(d.clone()));
        }
        if devices.rng {
            kinds.push(VirtioKind::Rng);
        }
        for fs in &devices.fs {
            kinds.push(VirtioKind::Fs(fs.clone()));
        }
        for kind in kinds {
            let slot = self.virtio.len() as u32;
            let dev = VirtioSlot::create(&self.vm, &self.mem, &self.mmio, slot, kind)?;
            info!(self.log, "virtio device"; "device" => dev.describe(), "base" => format!("{:#x}", dev.base), "irq" => dev.irq);
            self.virtio.push(dev);
        }
        self.first_hotplug_slot = self.virtio.len() as u32;
        Ok(())
    }

    fn add_hotplug_devices(&mut self, boot_vcpus: u32) -> Result<(), Error> {
        let irq = Arc::new(
            EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io("creating the GED eventfd"))?,
        );
        self.vm.register_irqfd(&irq, layout::IRQ_GED)?;
        let (ged, notifier) = Ged::new(irq, self.exit.clone());
        self.mmio.insert(
            "ged",
            layout::GED_START,
            layout::GED_SIZE,
            Arc::new(Mutex::new(ged)),
        )?;

        let cpus = Arc::new(Mutex::new(Shared {
            units: (0..self.max_vcpus)
                .map(|id| UnitState {
                    present: id < boot_vcpus,
                    ..Default::default()
                })
                .collect(),
            ejected: Vec::new(),
        }));
        let cpu_eject = Arc::new(
            EventFd::new(libc::EFD_NONBLOCK)
                .map_err(Error::io("creating the CPU eject eventfd"))?,
        );
        self.mmio.insert(
            "cpu-hotplug",
            layout::CPU_HOTPLUG_START,
            layout::CPU_HOTPLUG_SIZE,
            Arc::new(Mutex::new(SelectorBlock::new(
                cpus.clone(),
                cpu_eject.clone(),
            ))),
        )?;

        let total_slots = self.first_hotplug_slot + HOTPLUG_SLOTS;
        let slots = Arc::new(Mutex::new(Shared {
            units: (0..total_slots)
                .map(|n| UnitState {
                    present: n < self.first_hotplug_slot,
                    ..Default::default()
                })
                .collect(),
            ejected: Vec::new(),
        }));
        let slot_eject = Arc::new(
            EventFd::new(libc::EFD_NONBLOCK)
                .map_err(Error::io("creating the slot eject eventfd"))?,
        );
        self.mmio.insert(
            "slot-hotplug",
            layout::SLOT_HOTPLUG_START,
            layout::SLOT_HOTPLUG_SIZE,
            Arc::new(Mutex::new(SelectorBlock::new(
                slots.clone(),
                slot_eject.clone(),
            ))),
        )?;
        self.hotplug = Some(Hotplug {
            ged: notifier,
            cpus,
            cpu_eject,
            slots,
            slot_eject,
        });
        Ok(())
    }

    fn vcpu_context(&self) -> VcpuContext {
        VcpuContext {
            pio: self.pio.clone(),
            mmio: self.mmio.clone(),
            exit: self.exit.clone(),
            log: self.log.clone(),
            mem: self.ram.mem.clone(),
        }
    }

    fn start_vcpu(&mut self, id: u32) -> Result<(), Error> {
        let vcpu = match self.parked[id as usize].take() {
            Some(v) => v,
            None => Vcpu::new(&self.vm, id, &self.cpuid, self.max_vcpus)?,
        };
        let handle = vcpu.start(self.vcpu_context())?;
        self.vcpus[id as usize] = Some(handle);
        Ok(())
    }

    fn stop_vcpu(&mut self, id: u32) {
        if let Some(h) = self.vcpus.get_mut(id as usize).and_then(Option::take) {
            self.parked[id as usize] = h.stop();
        }
    }

    /// Runs the guest until it stops; returns why.
    pub fn run(mut self) -> Result<ExitReason, Error> {
        vcpu::install_kick_handler()?;
        if let Some(path) = &self.api_path {
            self.api = Some(ApiServer::start(path, self.log.clone())?);
        }
        // From here on the main thread only serves the loop below: confine it before any
        // vCPU (which inherits its filter) runs guest code.
        seccomp::enter(ThreadClass::Vmm)?;
        let epoll = Epoll::new().map_err(Error::io("creating the main epoll"))?;
        const EXIT: u64 = 1;
        const API: u64 = 2;
        const CPU_EJECT: u64 = 3;
        const SLOT_EJECT: u64 = 4;
        let watch = |fd: i32, token: u64| {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(Error::io("watching an eventfd in the main loop"))
        };
        watch(self.exit.eventfd().as_raw_fd(), EXIT)?;
        if let Some(api) = &self.api {
            watch(api.wake.as_raw_fd(), API)?;
        }
        if let Some(h) = &self.hotplug {
            watch(h.cpu_eject.as_raw_fd(), CPU_EJECT)?;
            watch(h.slot_eject.as_raw_fd(), SLOT_EJECT)?;
        }

        let boot: Vec<u32> = (0..self.max_vcpus)
            .filter(|&id| self.parked[id as usize].is_some())
            .collect();
        for id in boot {
            self.start_vcpu(id)?;
        }
        info!(self.log, "guest started"; "vcpus" => self.online_vcpus(), "memory_mib" => self.ram.size() >> 20);

        let mut events = vec![EpollEvent::default(); 8];
        let reason = 'main: loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break ExitReason::Error(format!("main loop epoll_wait: {e}")),
            };
            for ev in &events[..n] {
                match ev.data() {
                    EXIT => {
                        let _ = self.exit.eventfd().read();
                        if let Some(reason) = self.exit.reason() {
                            break 'main reason;
                        }
                    }
                    API => self.serve_api(),
                    CPU_EJECT => self.finish_cpu_ejects(),
                    SLOT_EJECT => self.finish_slot_ejects(),
                    _ => {}
                }
            }
        };
        self.stop_all();
        info!(self.log, "guest stopped"; "reason" => format!("{reason:?}"));
        Ok(reason)
    }

    fn stop_all(&mut self) {
        for h in self.vcpus.iter().flatten() {
            h.kick();
        }
        for id in 0..self.max_vcpus {
            self.stop_vcpu(id);
        }
        // Drops the listener's socket file; device workers stop with their devices.
        self.api = None;
        self.virtio.clear();
    }

    fn online_vcpus(&self) -> usize {
        self.vcpus.iter().flatten().count()
    }
}
