//! vCPUs: their initial state, and one thread each that runs `KVM_RUN` and hands port
//! I/O and MMIO exits to the buses.
//!
//! Stopping: [`VcpuHandle::kick`] sets the thread's stop flag and sends it
//! [`kick_signal`]; the handler sets `immediate_exit` in that thread's `kvm_run`, so
//! `KVM_RUN` returns at once whether the signal lands inside it or just before it.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_run, CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use slog::{debug, error, info, warn, Logger};
use vmm_sys_util::eventfd::EventFd;

use super::assist;
use super::memory::GuestMemoryMmap;
use super::vm::Vm;
use crate::arch::x86_64::{cpuid, msr, regs};
use crate::bus::Bus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vCPU {id}: {what}: {source}")]
    Kvm {
        id: u32,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: {source}")]
    Cpuid {
        id: u32,
        #[source]
        source: cpuid::Error,
    },
    #[error("vCPU {id}: {source}")]
    Msr {
        id: u32,
        #[source]
        source: msr::Error,
    },
    #[error("vCPU {id}: only {set} of {want} boot MSRs were accepted")]
    MsrCount { id: u32, set: usize, want: usize },
    #[error("vCPU {id}: {source}")]
    Regs {
        id: u32,
        #[source]
        source: regs::Error,
    },
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error("starting the thread of vCPU {id}: {source}")]
    Spawn {
        id: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Why the VM stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (ACPI sleep, KVM system event) or the VMM was asked to stop.
    PowerOff,
    /// The guest rebooted (i8042 reset, triple fault, ACPI reset register): a sandbox
    /// VM is not restarted, so this ends the VMM like a power-off.
    Reboot(&'static str),
    /// Something went wrong; the message says what.
    Error(String),
}

/// The first reason any thread reports, and an eventfd that wakes the main loop.
pub struct ExitSignal {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitSignal {
            reason: Mutex::new(None),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    pub fn request(&self, reason: ExitReason) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        // A full counter still wakes the loop; nothing else to do on error.
        let _ = self.evt.write(1);
    }

    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// What a vCPU thread needs besides its own file descriptor.
#[derive(Clone)]
pub struct VcpuContext {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exit: Arc<ExitSignal>,
    pub log: Logger,
    /// For reading the faulting instruction when KVM gives up on one.
    pub mem: GuestMemoryMmap,
}

pub struct Vcpu {
    id: u32,
    fd: VcpuFd,
}

/// LAPIC local vector table entries: LINT0 (0x350) wired to the PIC as ExtINT, LINT1
/// (0x360) as NMI, the way firmware leaves them.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

impl Vcpu {
    /// Creates vCPU `id` (also its APIC ID) with CPUID, MSRs, FPU and LAPIC set up;
    /// the boot vCPU also needs [`Vcpu::set_boot_state`]. The others wait in KVM for the
    /// INIT/SIPI sequence of the guest.
    pub fn new(vm: &Vm, id: u32, supported: &CpuId, max_vcpus: u32) -> Result<Self, Error> {
        let kvm = |what| move |source| Error::Kvm { id, what, source };
        let fd = vm.fd().create_vcpu(u64::from(id)).map_err(kvm("create"))?;
        let table = cpuid::for_vcpu(supported, id, max_vcpus)
            .map_err(|source| Error::Cpuid { id, source })?;
        fd.set_cpuid2(&table).map_err(kvm("set CPUID"))?;
        let msrs = msr::boot_msrs().map_err(|source| Error::Msr { id, source })?;
        let set = fd.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
        if set != msrs.as_slice().len() {
            return Err(Error::MsrCount {
                id,
                set,
                want: msrs.as_slice().len(),
            });
        }
        fd.set_fpu(&regs::boot_fpu()).map_err(kvm("set FPU"))?;
        let mut lapic = fd.get_lapic().map_err(kvm("get LAPIC"))?;
        set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
        fd.set_lapic(&lapic).map_err(kvm("set LAPIC"))?;
        Ok(Vcpu { id, fd })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Registers for the boot vCPU, entering the kernel at `entry`.
    pub fn set_boot_state(
        &self,
        mem: &GuestMemoryMmap,
        entry: u64,
        mode: regs::EntryMode,
    ) -> Result<(), Error> {
        let id = self.id;
        let kvm = |what| move |source| Error::Kvm { id, what, source };
        let mut sregs = self.fd.get_sregs().map_err(kvm("get sregs"))?;
        regs::setup_sregs(mem, mode, &mut sregs).map_err(|source| Error::Regs { id, source })?;
        self.fd.set_sregs(&sregs).map_err(kvm("set sregs"))?;
        self.fd
            .set_regs(&regs::boot_regs(entry, mode))
            .map_err(kvm("set regs"))?;
        Ok(())
    }

    /// Starts the thread running this vCPU.
    pub fn start(self, ctx: VcpuContext) -> Result<VcpuHandle, Error> {
        let id = self.id;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || self.run(ctx, thread_stop))
            .map_err(|source| Error::Spawn { id, source })?;
        Ok(VcpuHandle { id, stop, thread })
    }

    fn run(mut self, ctx: VcpuContext, stop: Arc<AtomicBool>) -> Vcpu {
        // Before the first KVM_RUN: the guest never runs on an unconfined vCPU thread.
        if let Err(e) = crate::seccomp::enter(crate::seccomp::ThreadClass::Vcpu) {
            error!(ctx.log, "cannot confine the vCPU thread"; "vcpu" => self.id, "error" => %e);
            ctx.exit
                .request(ExitReason::Error(format!("vCPU {}: {e}", self.id)));
            return self;
        }
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|p| p.set(run_ptr));
        debug!(ctx.log, "vCPU thread started"; "vcpu" => self.id);
        while !stop.load(Ordering::Acquire) {
            let internal_error = match self.fd.run() {
                Ok(VcpuExit::InternalError) => true,
                Ok(exit) => {
                    if let Some(reason) = handle_exit(self.id, exit, &ctx) {
                        ctx.exit.request(reason);
                        break;
                    }
                    false
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    false
                }
                Err(e) => {
                    error!(ctx.log, "KVM_RUN failed"; "vcpu" => self.id, "error" => %e);
                    ctx.exit
                        .request(ExitReason::Error(format!("vCPU {}: KVM_RUN: {e}", self.id)));
                    break;
                }
            };
            if internal_error && !self.assist_unemulated(&ctx.mem) {
                let detail = self.diagnose(&ctx.mem);
                error!(ctx.log, "KVM could not emulate a guest instruction"; "vcpu" => self.id, "detail" => &detail);
                ctx.exit.request(ExitReason::Error(format!(
                    "vCPU {}: KVM internal error ({detail})",
                    self.id
                )));
                break;
            }
        }
        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
        self.fd.set_kvm_immediate_exit(0);
        debug!(ctx.log, "vCPU thread stopped"; "vcpu" => self.id);
        self
    }
}

impl Vcpu {
    /// Completes a ring-0 instruction KVM's emulator refused, if it is one of those
    /// `assist` knows; false when it is not (the VM then stops with the details).
    fn assist_unemulated(&mut self, mem: &GuestMemoryMmap) -> bool {
        let (Ok(mut regs), Ok(sregs)) = (self.fd.get_regs(), self.fd.get_sregs()) else {
            return false;
        };
        if sregs.cs.dpl != 0 {
            return false;
        }
        let Ok(t) = self.fd.translate_gva(regs.rip) else {
            return false;
        };
        let mut insn = [0u8; 4];
        use vm_memory::Bytes;
        if t.valid == 0
            || mem
                .read_slice(&mut insn, vm_memory::GuestAddress(t.physical_address))
                .is_err()
        {
            return false;
        }
        let Some(assist) = assist::decode(&insn) else {
            return false;
        };
        let Ok(mut events) = self.fd.get_vcpu_events() else {
            return false;
        };
        assist::apply(assist, &mut regs, &mut events);
        self.fd.set_regs(&regs).is_ok() && self.fd.set_vcpu_events(&events).is_ok()
    }

    /// What KVM says about an internal error, and the instruction at RIP.
    fn diagnose(&mut self, mem: &GuestMemoryMmap) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: after a KVM_EXIT_INTERNAL_ERROR exit, `internal` is the active member
        // of the exit union; all of its fields are plain integers.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        let mut out = format!(
            "suberror {}, data {:x?}",
            internal.suberror,
            &internal.data[..n]
        );
        if let (Ok(regs), Ok(sregs)) = (self.fd.get_regs(), self.fd.get_sregs()) {
            out.push_str(&format!(
                ", rip {:#x}, cr0 {:#x}, cr3 {:#x}, cr4 {:#x}, efer {:#x}, cs.l {}",
                regs.rip, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer, sregs.cs.l
            ));
            if let Ok(t) = self.fd.translate_gva(regs.rip) {
                let mut insn = [0u8; 16];
                use vm_memory::Bytes;
                if t.valid != 0
                    && mem
                        .read_slice(&mut insn, vm_memory::GuestAddress(t.physical_address))
                        .is_ok()
                {
                    out.push_str(&format!(", bytes at rip {insn:02x?}"));
                }
            }
        }
        out
    }
}

fn set_lvt_mode(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = regs[offset + i] as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

/// Returns why the VM must stop, or None to keep running.
fn handle_exit(id: u32, exit: VcpuExit, ctx: &VcpuContext) -> Option<ExitReason> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !ctx.pio.read(u64::from(port), data) {
                // What an ISA bus with nothing on it returns.
                data.fill(0xff);
                debug!(ctx.log, "read from an unhandled port"; "port" => format!("{port:#x}"));
            }
        }
        VcpuExit::IoOut(port, data) => {
            if !ctx.pio.write(u64::from(port), data) {
                debug!(ctx.log, "write to an unhandled port"; "port" => format!("{port:#x}"));
            }
        }
        VcpuExit::MmioRead(addr, data) => {
            if !ctx.mmio.read(addr, data) {
                data.fill(0);
                debug!(ctx.log, "MMIO read outside any device"; "addr" => format!("{addr:#x}"));
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !ctx.mmio.write(addr, data) {
                debug!(ctx.log, "MMIO write outside any device"; "addr" => format!("{addr:#x}"));
            }
        }
        // Only seen without an in-kernel LAPIC, or for a guest that halts with
        // interrupts off: nothing will wake it.
        VcpuExit::Hlt => {
            info!(ctx.log, "vCPU halted"; "vcpu" => id);
            return Some(ExitReason::PowerOff);
        }
        VcpuExit::Shutdown => {
            warn!(ctx.log, "triple fault: the guest reset"; "vcpu" => id);
            return Some(ExitReason::Reboot("triple fault"));
        }
        VcpuExit::SystemEvent(kind, _) => {
            return Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
                KVM_SYSTEM_EVENT_RESET => ExitReason::Reboot("KVM system reset"),
                KVM_SYSTEM_EVENT_CRASH => ExitReason::Error("the guest crashed".into()),
                other => ExitReason::Error(format!("unexpected KVM system event {other}")),
            })
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Some(ExitReason::Error(format!(
                "vCPU {id}: KVM entry failed (hardware reason {reason:#x}, cpu {cpu})"
            )))
        }
        other => {
            warn!(ctx.log, "unhandled vCPU exit"; "vcpu" => id, "exit" => format!("{other:?}"));
        }
    }
    None
}

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler; null outside `Vcpu::run`.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let ptr = KVM_RUN.with(|p| p.get());
    if !ptr.is_null() {
        // SAFETY: the pointer is this thread's own mapped `kvm_run`, set by `Vcpu::run`
        // and cleared before the `VcpuFd` (and its mapping) can go away; a volatile
        // byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*ptr).immediate_exit).write_volatile(1) };
    }
}

/// The real-time signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Installs the kick handler; call once before starting vCPUs.
pub fn install_kick_handler() -> Result<(), Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).map_err(Error::Signal)
}

/// A running vCPU thread.
pub struct VcpuHandle {
    id: u32,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vcpu>,
}

impl VcpuHandle {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Asks the thread to leave its run loop (asynchronously).
    pub fn kick(&self) {
        self.stop.store(true, Ordering::Release);
        if !self.thread.is_finished() {
            // SAFETY: the pthread handle is live: the JoinHandle has not been joined.
            unsafe { libc::pthread_kill(self.thread.as_pthread_t(), kick_signal()) };
        }
    }

    /// Kicks and waits for the thread; gives back the vCPU so it can run again later
    /// (KVM cannot destroy a vCPU).
    pub fn stop(self) -> Option<Vcpu> {
        self.kick();
        self.thread.join().ok()
    }
}
