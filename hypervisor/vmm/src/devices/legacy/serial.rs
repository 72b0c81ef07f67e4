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

/// The most the console log holds: a guest printing without end must not fill the
/// host's /run (issue 14). 1 MiB holds a whole boot at debug level many times over.
pub const CONSOLE_LOG_LIMIT: u64 = 1 << 20;

/// What starts the log after it was emptied for reaching its limit.
const TRUNCATED: &[u8] =
    b"[ward-vmm: the console log reached its size limit; earlier output was dropped]\n";

/// The console log: every byte the guest sends, written through at once so the log is
/// complete when the VM dies. When it would grow past its limit it is emptied and starts
/// again with a note: what matters after a failure is the end of the log, which ward
/// shows (`console_tail`), so the latest output is what is kept.
pub struct ConsoleLog {
    file: File,
    len: u64,
    limit: u64,
}

impl ConsoleLog {
    /// `file` must be opened for appending; `limit` is at least a few hundred bytes.
    pub fn new(file: File, limit: u64) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(ConsoleLog { file, len, limit })
    }
}

impl Write for ConsoleLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len.saturating_add(buf.len() as u64) > self.limit {
            // Appending: after the truncation writes land at offset 0 again.
            self.file.set_len(0)?;
            self.len = 0;
            self.file.write_all(TRUNCATED)?;
            self.len = TRUNCATED.len() as u64;
        }
        let n = self.file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct SerialDevice {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleLog>,
}

impl SerialDevice {
    /// A UART logging to `path` (created or appended to), at most [`CONSOLE_LOG_LIMIT`].
    pub fn new(path: &Path) -> Result<Self, Error> {
        Self::with_limit(path, CONSOLE_LOG_LIMIT)
    }

    fn with_limit(path: &Path, limit: u64) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.display().to_string(),
                source,
            })?;
        let log = ConsoleLog::new(file, limit).map_err(|source| Error::Open {
            path: path.display().to_string(),
            source,
        })?;
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        Ok(SerialDevice {
            uart: Serial::new(IrqTrigger(evt), log),
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

    /// A guest flooding its console: the log never passes its limit, and holds the latest
    /// output after the note.
    #[test]
    fn a_flood_stays_within_the_limit_and_keeps_the_latest_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, vec![b'#'; 900]).unwrap();
        let limit = 1000;
        let mut dev = SerialDevice::with_limit(&path, limit).unwrap();
        let mut max = 0;
        for i in 0..10_000u32 {
            dev.write(0, &[b'a' + (i % 26) as u8]);
            max = max.max(std::fs::metadata(&path).unwrap().len());
        }
        for b in b"\nthe end\n" {
            dev.write(0, &[*b]);
        }
        assert!(max <= limit, "the log grew to {max} bytes");
        let log = std::fs::read(&path).unwrap();
        assert!(log.len() as u64 <= limit);
        assert!(
            log.starts_with(TRUNCATED),
            "{}",
            String::from_utf8_lossy(&log)
        );
        assert!(log.ends_with(b"\nthe end\n"));
        assert!(
            !log.contains(&b'#'),
            "output from before the limit survived"
        );
    }
}
