//! virtio devices over the virtio-mmio transport.
//!
//! # How the VMM core wires a device
//!
//! ```text
//! let irq_evt = EventFd::new(EFD_NONBLOCK)?;
//! vm_fd.register_irqfd(&irq_evt, gsi)?;                       // guest interrupt line
//! let interrupt = Arc::new(IrqfdInterrupt::new(irq_evt));
//! let device = Box::new(rng::Rng::new()?);                     // or block / vsock
//! let transport = MmioTransport::new(mem.clone(), device, interrupt)?;
//! for (i, evt) in transport.queue_evts().iter().enumerate() {
//!     // A guest write of `i` to QueueNotify signals `evt` without a VM exit.
//!     vm_fd.register_ioevent(evt, &IoEventAddress::Mmio(base + NOTIFY_REG_OFFSET), i as u32)?;
//! }
//! // MMIO exits in [base, base + MMIO_WINDOW) go to transport.read/write(addr - base, data).
//! // Kernel command line: virtio_mmio.device=4K@0x<base>:<irq>
//! ```
//!
//! The transport owns the register state and the queue configuration; when the guest sets
//! DRIVER_OK it hands the configured queues to [`VirtioDevice::activate`], which starts one
//! worker thread per device. The worker raises interrupts through [`Interrupt::trigger`], which
//! ORs the cause into the InterruptStatus register that the transport reads and the guest
//! acknowledges through InterruptACK.

pub mod block;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;

mod chain;
mod worker;

#[cfg(test)]
pub(crate) mod test_util;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

pub use mmio::{MmioTransport, MMIO_WINDOW, NOTIFY_REG_OFFSET};
pub use virtio_queue::Queue;

/// Guest memory as devices see it: swappable (for hotplug) and shareable across threads.
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap>;

/// virtio device IDs (virtio 1.2, section 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_VSOCK: u32 = 19;
pub const TYPE_FS: u32 = 26;

/// The device speaks the virtio 1.x (non-legacy) interface; every device offers it.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Cause bits of the InterruptStatus register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptStatus(u32);

impl InterruptStatus {
    /// The device put buffers in a used ring.
    pub const USED_RING: Self = Self(1 << 0);
    /// The device configuration space changed (or the device needs a reset).
    pub const CONFIG_CHANGE: Self = Self(1 << 1);

    pub fn bits(self) -> u32 {
        self.0
    }
}

/// Raised by a device to interrupt the guest.
///
/// The implementation also keeps the InterruptStatus register, so that the worker thread that
/// raises an interrupt and the vCPU thread that reads/acknowledges it agree on its value.
pub trait Interrupt: Send + Sync {
    /// ORs `status` into the InterruptStatus register and injects the interrupt.
    fn trigger(&self, status: InterruptStatus) -> io::Result<()>;
    /// Current value of the InterruptStatus register.
    fn status(&self) -> u32;
    /// Clears the `bits` the guest acknowledged through InterruptACK.
    fn ack(&self, bits: u32);
}

/// [`Interrupt`] backed by an EventFd that the core registers as a KVM irqfd.
pub struct IrqfdInterrupt {
    status: Arc<AtomicU32>,
    evt: EventFd,
}

impl IrqfdInterrupt {
    pub fn new(evt: EventFd) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            evt,
        }
    }

    /// The EventFd to register with `VmFd::register_irqfd`.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// The InterruptStatus register, for a core that wants to read it elsewhere.
    pub fn status_register(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.status)
    }
}

impl Interrupt for IrqfdInterrupt {
    fn trigger(&self, status: InterruptStatus) -> io::Result<()> {
        // The bit must be visible before the guest can take the interrupt and read it.
        self.status.fetch_or(status.bits(), Ordering::SeqCst);
        self.evt.write(1)
    }

    fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("device expects {expected} queues, the transport gave {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("device is already active")]
    AlreadyActive,
    #[error("cannot create the worker's epoll or eventfd: {0}")]
    Epoll(#[source] io::Error),
    #[error("cannot spawn the device worker thread: {0}")]
    Spawn(#[source] io::Error),
    #[error("device backend failed: {0}")]
    Backend(String),
}

/// A virtio device model, driven by a transport (see [`MmioTransport`]).
pub trait VirtioDevice: Send {
    /// virtio device ID (net 1, rng 4, block 2, vsock 19, fs 26).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver; includes [`VIRTIO_F_VERSION_1`].
    fn device_features(&self) -> u64;
    /// Features the driver accepted (a subset of `device_features`, checked by the transport).
    fn ack_features(&mut self, features: u64);
    /// Reads the device-specific configuration space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space; read-only fields ignore writes.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device's worker (a thread per device, epoll on queue EventFds and backend fds).
    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<(Queue, EventFd)>,
    ) -> Result<(), ActivateError>;
    /// Stops the worker; returns false when the device cannot be reset.
    fn reset(&mut self) -> bool;
}

/// Copies the part of a device's little-endian config structure that `offset`/`data` cover.
#[allow(dead_code)] // used by the block and vsock config spaces
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bytes_are_bounded() {
        let cfg = [1u8, 2, 3, 4];
        let mut out = [0xffu8; 4];
        read_config_bytes(&cfg, 2, &mut out);
        assert_eq!(out, [3, 4, 0, 0]);
        read_config_bytes(&cfg, u64::MAX, &mut out);
        assert_eq!(out, [0; 4]);
    }

    #[test]
    fn irqfd_interrupt_ors_and_acks() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = IrqfdInterrupt::new(evt);
        irq.trigger(InterruptStatus::USED_RING).unwrap();
        irq.trigger(InterruptStatus::CONFIG_CHANGE).unwrap();
        assert_eq!(irq.status(), 3);
        assert_eq!(irq.eventfd().read().unwrap(), 2);
        irq.ack(1);
        assert_eq!(irq.status(), 2);
    }
}
