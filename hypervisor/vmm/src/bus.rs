//! Address-range dispatch of the guest's port I/O and MMIO accesses to devices.
//!
//! One [`Bus`] per address space. vCPU threads look devices up concurrently; hotplug
//! inserts and removes them while the guest runs, hence the `RwLock`. Each device sits
//! behind its own `Mutex`, so two vCPUs touching different devices do not contend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// Something that answers reads and writes in its address range; `offset` is relative
/// to the range's base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{name}: range {base:#x}+{len:#x} is empty or overlaps a device already there")]
    Overlap { name: String, base: u64, len: u64 },
}

struct Entry {
    len: u64,
    name: String,
    device: Arc<Mutex<dyn BusDevice>>,
}

#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &self,
        name: &str,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), Error> {
        let overlap = || Error::Overlap {
            name: name.to_string(),
            base,
            len,
        };
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(overlap)?;
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        if let Some((b, e)) = ranges.range(..end).next_back() {
            if b + e.len > base {
                return Err(overlap());
            }
        }
        ranges.insert(
            base,
            Entry {
                len,
                name: name.to_string(),
                device,
            },
        );
        Ok(())
    }

    /// Removes the device whose range starts at `base`; returns its name.
    pub fn remove(&self, base: u64) -> Option<String> {
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        ranges.remove(&base).map(|e| e.name)
    }

    fn find(&self, addr: u64) -> Option<(u64, Arc<Mutex<dyn BusDevice>>)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (base, entry) = ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then(|| (addr - base, entry.device.clone()))
    }

    /// Reads from the device at `addr`; false (and `data` untouched) when there is none.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; false when there is none.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                dev.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        last: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert("rec", 0x100, 0x10, dev.clone()).unwrap();
        let mut b = [0u8; 2];
        assert!(bus.read(0x105, &mut b));
        assert_eq!(b, [5, 5]);
        assert!(!bus.read(0x110, &mut b));
        assert!(!bus.read(0xff, &mut b));
        assert!(bus.write(0x10f, &[1]));
        assert_eq!(dev.lock().unwrap().last, Some((0xf, vec![1])));
    }

    #[test]
    fn rejects_overlaps_and_removes() {
        let bus = Bus::new();
        let dev = Arc::new(Mutex::new(Recorder::default()));
        bus.insert("a", 0x100, 0x10, dev.clone()).unwrap();
        assert!(bus.insert("b", 0x10f, 0x10, dev.clone()).is_err());
        assert!(bus.insert("c", 0xf8, 0x9, dev.clone()).is_err());
        assert!(bus.insert("d", 0x0, 0, dev.clone()).is_err());
        bus.insert("e", 0x110, 0x10, dev.clone()).unwrap();
        assert_eq!(bus.remove(0x100).as_deref(), Some("a"));
        assert!(!bus.write(0x100, &[0]));
        assert!(bus.write(0x110, &[0]));
    }
}
