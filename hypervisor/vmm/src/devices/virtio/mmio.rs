//! virtio-mmio transport, register layout version 2 (virtio 1.2, section 4.2.2).
//!
//! The core maps [`MMIO_WINDOW`] bytes at a base address, forwards every access in that window
//! to [`MmioTransport::read`] / [`MmioTransport::write`] with the offset from the base, and
//! registers each of [`MmioTransport::queue_evts`] as a KVM ioeventfd on
//! `base + NOTIFY_REG_OFFSET` with datamatch = queue index (4-byte access). A QueueNotify
//! write that still reaches the transport (no ioeventfd) signals the same EventFd.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::EventFd;

use super::{
    ActivateError, GuestMem, Interrupt, InterruptStatus, VirtioDevice, VIRTIO_F_VERSION_1,
};

/// Size of the register window of one device.
pub const MMIO_WINDOW: u64 = 0x1000;
/// Offset of the QueueNotify register, where the core places the ioeventfds.
pub const NOTIFY_REG_OFFSET: u64 = 0x50;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x5741_5244; // "WARD"

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = NOTIFY_REG_OFFSET;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_SHM_SEL: u64 = 0x0ac;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_SHM_BASE_LOW: u64 = 0x0b8;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_SPACE: u64 = 0x100;

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// Why a transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("cannot create the QueueNotify eventfd of queue {queue}: {source}")]
    QueueEventFd {
        queue: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("device declares an invalid maximum size {size} for queue {queue}")]
    QueueSize { queue: usize, size: u16 },
}

/// One virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    mem: GuestMem,
    device: Box<dyn VirtioDevice>,
    interrupt: Arc<dyn Interrupt>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
    bad_queue_size: bool,
    active: bool,
}

impl MmioTransport {
    pub fn new(
        mem: GuestMem,
        device: Box<dyn VirtioDevice>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<Self, MmioError> {
        let queues = fresh_queues(device.queue_max_sizes())?;
        let queue_evts = (0..queues.len())
            .map(|queue| {
                EventFd::new(libc::EFD_NONBLOCK)
                    .map_err(|source| MmioError::QueueEventFd { queue, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            mem,
            device,
            interrupt,
            queues,
            queue_evts,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            bad_queue_size: false,
            active: false,
        })
    }

    /// One EventFd per queue, signalled on a QueueNotify write of the queue's index.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The virtio device ID, for the core's logs and device tree / command line.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// True once the driver set DRIVER_OK and the device worker runs.
    pub fn is_active(&self) -> bool {
        self.active
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        // Registers below the config space are 32 bits wide and accessed as such (4.2.2.2).
        data.fill(0);
        if data.len() != 4 || offset % 4 != 0 {
            return;
        }
        let value = self.read_register(offset);
        data.copy_from_slice(&value.to_le_bytes());
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            // Config writes are only meaningful between DRIVER and a failure.
            if self.status & status::DRIVER != 0 && self.status & status::FAILED == 0 {
                self.device.write_config(offset - CONFIG_SPACE, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if offset % 4 != 0 {
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.device_features() as u32,
                1 => (self.device.device_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            // No shared memory regions: a length of all ones says "absent".
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH => u32::MAX,
            REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => u32::MAX,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES => self.write_driver_features(value),
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM => self.set_queue_size(value),
            REG_QUEUE_READY => self.with_queue_setup(|q| q.set_ready(value == 1)),
            REG_QUEUE_DESC_LOW => {
                self.with_queue_setup(|q| q.set_desc_table_address(Some(value), None))
            }
            REG_QUEUE_DESC_HIGH => {
                self.with_queue_setup(|q| q.set_desc_table_address(None, Some(value)))
            }
            REG_QUEUE_DRIVER_LOW => {
                self.with_queue_setup(|q| q.set_avail_ring_address(Some(value), None))
            }
            REG_QUEUE_DRIVER_HIGH => {
                self.with_queue_setup(|q| q.set_avail_ring_address(None, Some(value)))
            }
            REG_QUEUE_DEVICE_LOW => {
                self.with_queue_setup(|q| q.set_used_ring_address(Some(value), None))
            }
            REG_QUEUE_DEVICE_HIGH => {
                self.with_queue_setup(|q| q.set_used_ring_address(None, Some(value)))
            }
            REG_QUEUE_NOTIFY => self.notify(value),
            REG_INTERRUPT_ACK => self.interrupt.ack(value),
            REG_STATUS => self.write_status(value),
            REG_SHM_SEL => {}
            _ => {}
        }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    /// Queue registers are writable only between FEATURES_OK and DRIVER_OK (4.2.3.2).
    fn with_queue_setup(&mut self, f: impl FnOnce(&mut Queue)) {
        let setup = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        if self.status & !status::DEVICE_NEEDS_RESET != setup {
            return;
        }
        if let Some(q) = self.queues.get_mut(self.queue_sel as usize) {
            f(q);
        }
    }

    fn set_queue_size(&mut self, value: u32) {
        let mut valid = true;
        self.with_queue_setup(|q| {
            valid = u16::try_from(value).is_ok_and(|size| q.try_set_size(size).is_ok());
        });
        // A size the queue cannot take would leave device and driver disagreeing on the ring
        // layout; DRIVER_OK will refuse to start.
        self.bad_queue_size |= !valid;
    }

    fn write_driver_features(&mut self, value: u32) {
        // Features are negotiated after DRIVER and before FEATURES_OK.
        if self.status != status::ACKNOWLEDGE | status::DRIVER {
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            _ => {}
        }
    }

    fn notify(&self, value: u32) {
        if !self.active {
            return;
        }
        if let Some(evt) = self.queue_evts.get(value as usize) {
            // A full counter still wakes the worker, so a failed write loses nothing.
            let _ = evt.write(1);
        }
    }

    fn write_status(&mut self, value: u32) {
        use status::*;
        if value == 0 {
            self.reset();
            return;
        }
        if value & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        let current = self.status & !DEVICE_NEEDS_RESET;
        // The driver sets one more bit at a time, in the order of 3.1.1.
        let next = match (current, value & !DEVICE_NEEDS_RESET) {
            (0, ACKNOWLEDGE) => ACKNOWLEDGE,
            (ACKNOWLEDGE, v) if v == ACKNOWLEDGE | DRIVER => v,
            (c, v) if c == ACKNOWLEDGE | DRIVER && v == c | FEATURES_OK => {
                if !self.accept_features() {
                    // FEATURES_OK stays clear: the driver reads it back and gives up.
                    return;
                }
                v
            }
            (c, v) if c == ACKNOWLEDGE | DRIVER | FEATURES_OK && v == c | DRIVER_OK => {
                self.status = v | (self.status & DEVICE_NEEDS_RESET);
                self.activate();
                return;
            }
            _ => return,
        };
        self.status = next | (self.status & DEVICE_NEEDS_RESET);
    }

    fn accept_features(&mut self) -> bool {
        let offered = self.device.device_features();
        let wanted = self.driver_features;
        if wanted & !offered != 0 || wanted & VIRTIO_F_VERSION_1 == 0 {
            return false;
        }
        self.device.ack_features(wanted);
        true
    }

    fn activate(&mut self) {
        let mem = self.mem.memory();
        let all_valid = !self.bad_queue_size && self.queues.iter().all(|q| q.is_valid(&*mem));
        drop(mem);
        if !all_valid {
            self.needs_reset();
            return;
        }
        let result = self.take_queues().and_then(|queues| {
            self.device
                .activate(self.mem.clone(), Arc::clone(&self.interrupt), queues)
        });
        match result {
            Ok(()) => self.active = true,
            Err(_) => self.needs_reset(),
        }
    }

    /// Moves the configured queues to the device, leaving fresh ones for the next reset.
    fn take_queues(&mut self) -> Result<Vec<(Queue, EventFd)>, ActivateError> {
        let fresh = fresh_queues(self.device.queue_max_sizes())
            .map_err(|e| ActivateError::Backend(e.to_string()))?;
        let configured = std::mem::replace(&mut self.queues, fresh);
        configured
            .into_iter()
            .zip(&self.queue_evts)
            .map(|(q, evt)| {
                evt.try_clone()
                    .map(|e| (q, e))
                    .map_err(ActivateError::Epoll)
            })
            .collect()
    }

    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        // Best effort: the driver also sees the bit when it next reads Status.
        let _ = self.interrupt.trigger(InterruptStatus::CONFIG_CHANGE);
    }

    fn reset(&mut self) {
        if self.active && !self.device.reset() {
            // The device keeps running; only FAILED tells the driver not to use it.
            self.status = status::FAILED;
            return;
        }
        self.active = false;
        for q in &mut self.queues {
            q.reset();
        }
        for evt in &self.queue_evts {
            // Drop notifications from before the reset.
            let _ = evt.read();
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.bad_queue_size = false;
        self.status = 0;
        self.interrupt.ack(u32::MAX);
    }
}

fn fresh_queues(max_sizes: &[u16]) -> Result<Vec<Queue>, MmioError> {
    max_sizes
        .iter()
        .enumerate()
        .map(|(queue, &size)| Queue::new(size).map_err(|_| MmioError::QueueSize { queue, size }))
        .collect()
}

#[cfg(test)]
mod tests;
