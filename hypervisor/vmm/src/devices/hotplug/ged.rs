//! The Generic Event Device's registers (ACPI0013): pending event bits the guest's
//! `_EVT` reads and clears, plus the hardware-reduced sleep control, sleep status and
//! reset registers the FADT points at.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::vstate::vcpu::{ExitReason, ExitSignal};

/// Offsets in the GED block.
pub const EVENT: u64 = 0;
pub const SLEEP_CONTROL: u64 = 4;
pub const SLEEP_STATUS: u64 = 5;
pub const RESET: u64 = 6;
/// What the guest writes to `RESET` (the FADT's RESET_VALUE).
pub const RESET_VALUE: u8 = 1;

/// Event bits: a CPU changed, a virtio slot changed, the host asks for a shutdown.
pub const EVENT_CPU: u32 = 1 << 0;
pub const EVENT_SLOTS: u32 = 1 << 1;
pub const EVENT_SHUTDOWN: u32 = 1 << 2;

/// SLP_EN, and the SLP_TYP field of the sleep control register (ACPI 6.5, 4.8.3.7).
const SLEEP_ENABLE: u8 = 1 << 5;
const SLEEP_TYPE_SHIFT: u8 = 2;
const SLEEP_TYPE_MASK: u8 = 0x7;
/// The S5 (soft-off) sleep type declared by the DSDT's `_S5`.
const SLEEP_TYPE_S5: u8 = 5;

/// The host side: raises events.
#[derive(Clone)]
pub struct GedNotifier {
    pending: Arc<AtomicU32>,
    irq: Arc<EventFd>,
}

impl GedNotifier {
    /// Marks `bits` pending and interrupts the guest.
    pub fn notify(&self, bits: u32) -> std::io::Result<()> {
        self.pending.fetch_or(bits, Ordering::SeqCst);
        self.irq.write(1)
    }
}

/// The guest side: the MMIO register block.
pub struct Ged {
    pending: Arc<AtomicU32>,
    exit: Arc<ExitSignal>,
}

impl Ged {
    /// The device and its notifier; `irq` is the irqfd of the GED's interrupt line.
    pub fn new(irq: Arc<EventFd>, exit: Arc<ExitSignal>) -> (Self, GedNotifier) {
        let pending = Arc::new(AtomicU32::new(0));
        (
            Ged {
                pending: pending.clone(),
                exit,
            },
            GedNotifier { pending, irq },
        )
    }
}

impl BusDevice for Ged {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == EVENT && data.len() == 4 {
            let bits = self.pending.swap(0, Ordering::SeqCst);
            data.copy_from_slice(&bits.to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            SLEEP_CONTROL
                if value & SLEEP_ENABLE != 0
                    && (value >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK == SLEEP_TYPE_S5 =>
            {
                self.exit.request(ExitReason::PowerOff);
            }
            RESET if value == RESET_VALUE => {
                self.exit.request(ExitReason::Reboot("ACPI reset register"))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ged() -> (Ged, GedNotifier, Arc<ExitSignal>, Arc<EventFd>) {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let (g, n) = Ged::new(irq.clone(), exit.clone());
        (g, n, exit, irq)
    }

    #[test]
    fn events_are_read_once() {
        let (mut g, n, _, irq) = ged();
        n.notify(EVENT_CPU).unwrap();
        n.notify(EVENT_SLOTS).unwrap();
        assert_eq!(irq.read().unwrap(), 2);
        let mut b = [0u8; 4];
        g.read(EVENT, &mut b);
        assert_eq!(u32::from_le_bytes(b), EVENT_CPU | EVENT_SLOTS);
        g.read(EVENT, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0);
    }

    #[test]
    fn s5_powers_off_and_reset_reboots() {
        let (mut g, _, exit, _) = ged();
        g.write(SLEEP_CONTROL, &[3 << SLEEP_TYPE_SHIFT | SLEEP_ENABLE]);
        assert_eq!(exit.reason(), None);
        g.write(
            SLEEP_CONTROL,
            &[SLEEP_TYPE_S5 << SLEEP_TYPE_SHIFT | SLEEP_ENABLE],
        );
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
        let (mut g, _, exit, _) = ged();
        g.write(RESET, &[RESET_VALUE]);
        assert_eq!(
            exit.reason(),
            Some(ExitReason::Reboot("ACPI reset register"))
        );
    }
}
