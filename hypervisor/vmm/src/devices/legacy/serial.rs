//! COM1: vm-superio's 16550A, its output appended to the console log file, its
//! interrupt delivered through an irqfd.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the serial log {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the serial interrupt eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// Raises the UART's IRQ by writing to its irqfd.
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The console log: every byte the guest sends, written through at once so the log is
/// complete when the VM dies.
pub struct ConsoleLog(File);

impl Write for ConsoleLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct SerialDevice {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleLog>,
}

impl SerialDevice {
    /// A UART logging to `path` (created or appended to).
    pub fn new(path: &Path) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.display().to_string(),
                source,
            })?;
        Self::with_writer(file)
    }

    fn with_writer(file: File) -> Result<Self, Error> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        Ok(SerialDevice {
            uart: Serial::new(IrqTrigger(evt), ConsoleLog(file)),
        })
    }

    /// The eventfd to register as an irqfd for the UART's IRQ line.
    pub fn irq_evt(&self) -> &EventFd {
        &self.uart.interrupt_evt().0
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Ok(off), [first, rest @ ..]) = (u8::try_from(offset), data) {
            *first = self.uart.read(off);
            rest.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), Some(&value)) = (u8::try_from(offset), data.first()) {
            // A write the log file refuses (disk full) must not stop the guest.
            let _ = self.uart.write(off, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_reach_the_log() {
        let dir = std::env::temp_dir().join(format!("ward-vmm-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let mut dev = SerialDevice::new(&path).unwrap();
        for b in b"hi\n" {
            dev.write(0, &[*b]);
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"hi\n");
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        dev.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
