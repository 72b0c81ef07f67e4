//! CPU hotplug registers, one CPU at a time through a selector:
//!
//! | offset | size | meaning                                                      |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 4    | selected CPU (APIC ID)                                       |
//! | 4      | 1    | bit 0 present, bit 1 being added, bit 2 being removed (read);|
//! |        |      | write 1 to bit 1 / bit 2 to acknowledge, to bit 3 to eject   |
//!
//! The same layout serves the virtio slots (`slots`), so it lives in [`SelectorBlock`].

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

pub const REGISTER_BYTES: u64 = 8;

const SELECT: u64 = 0;
const FLAGS: u64 = 4;
const PRESENT: u8 = 1 << 0;
const INSERTING: u8 = 1 << 1;
const REMOVING: u8 = 1 << 2;
const EJECT: u8 = 1 << 3;

/// The state of one hotpluggable unit (a CPU, a slot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitState {
    pub present: bool,
    pub inserting: bool,
    pub removing: bool,
}

/// Units the guest asked to eject, for the VMM's main loop to act on.
#[derive(Default)]
pub struct Shared {
    pub units: Vec<UnitState>,
    pub ejected: Vec<u32>,
}

/// Register block over `Shared`; `eject_evt` wakes the main loop on an eject.
pub struct SelectorBlock {
    shared: Arc<Mutex<Shared>>,
    selected: u32,
    eject_evt: Arc<EventFd>,
}

impl SelectorBlock {
    pub fn new(shared: Arc<Mutex<Shared>>, eject_evt: Arc<EventFd>) -> Self {
        SelectorBlock {
            shared,
            selected: 0,
            eject_evt,
        }
    }
}

impl BusDevice for SelectorBlock {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        match offset {
            SELECT if data.len() == 4 => data.copy_from_slice(&self.selected.to_le_bytes()),
            FLAGS => {
                if let Some(u) = shared.units.get(self.selected as usize) {
                    data[0] = (u8::from(u.present) * PRESENT)
                        | (u8::from(u.inserting) * INSERTING)
                        | (u8::from(u.removing) * REMOVING);
                }
            }
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            SELECT if data.len() == 4 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                self.selected = u32::from_le_bytes(b);
            }
            FLAGS => {
                let Some(&value) = data.first() else {
                    return;
                };
                let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                let selected = self.selected;
                let Some(u) = shared.units.get_mut(selected as usize) else {
                    return;
                };
                if value & INSERTING != 0 {
                    u.inserting = false;
                }
                if value & REMOVING != 0 {
                    u.removing = false;
                }
                if value & EJECT != 0 && u.present {
                    shared.ejected.push(selected);
                    let _ = self.eject_evt.write(1);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_read_ack_eject() {
        let shared = Arc::new(Mutex::new(Shared {
            units: vec![UnitState::default(); 3],
            ejected: vec![],
        }));
        let evt = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut b = SelectorBlock::new(shared.clone(), evt.clone());
        shared.lock().unwrap().units[2] = UnitState {
            present: true,
            inserting: true,
            removing: false,
        };
        b.write(SELECT, &2u32.to_le_bytes());
        let mut f = [0u8];
        b.read(FLAGS, &mut f);
        assert_eq!(f[0], PRESENT | INSERTING);
        b.write(FLAGS, &[INSERTING]);
        b.read(FLAGS, &mut f);
        assert_eq!(f[0], PRESENT);
        b.write(FLAGS, &[EJECT]);
        assert_eq!(shared.lock().unwrap().ejected, vec![2]);
        assert_eq!(evt.read().unwrap(), 1);
        // Out of range selections read as absent and ignore writes.
        b.write(SELECT, &9u32.to_le_bytes());
        b.read(FLAGS, &mut f);
        assert_eq!(f[0], 0);
        b.write(FLAGS, &[EJECT]);
        assert_eq!(shared.lock().unwrap().ejected, vec![2]);
    }
}
