//! Guest RAM: one memfd, mapped shared, so a vhost-user backend (virtiofsd) can map the
//! same pages later from the file descriptor.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress};

use crate::arch::x86_64::layout;

pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest memory of {mib} MiB is out of range (16 MiB to 1 TiB)")]
    Size { mib: u64 },
    #[error("creating the guest memory memfd: {0}")]
    Memfd(#[source] std::io::Error),
    #[error("sizing the guest memory memfd to {size} bytes: {source}")]
    Truncate {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping guest memory: {0}")]
    Map(#[source] vm_memory::mmap::FromRangesError),
}

/// Guest RAM and the file behind it.
pub struct GuestRam {
    pub mem: GuestMemoryMmap,
    /// Backs all of `mem`, ranges in ascending order at increasing file offsets.
    pub file: Arc<File>,
    /// (guest address, size) of each RAM range.
    pub ranges: Vec<(u64, u64)>,
}

impl GuestRam {
    pub fn new(mib: u64) -> Result<Self, Error> {
        if !(16..=(1 << 20)).contains(&mib) {
            return Err(Error::Size { mib });
        }
        let size = mib << 20;
        let file = Arc::new(memfd(c"ward-guest-ram")?);
        file.set_len(size)
            .map_err(|source| Error::Truncate { size, source })?;
        let ranges = layout::ram_ranges(size);
        let mut offset = 0u64;
        let with_files: Vec<(GuestAddress, usize, Option<FileOffset>)> = ranges
            .iter()
            .map(|&(start, len)| {
                let fo = FileOffset::from_arc(file.clone(), offset);
                offset += len;
                (GuestAddress(start), len as usize, Some(fo))
            })
            .collect();
        let mem = GuestMemoryMmap::from_ranges_with_files(with_files).map_err(Error::Map)?;
        Ok(GuestRam { mem, file, ranges })
    }

    pub fn size(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).sum()
    }
}

fn memfd(name: &CStr) -> Result<File, Error> {
    // SAFETY: `name` is a valid NUL-terminated string; the flags are constants.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this descriptor and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemory, GuestMemoryRegion};

    #[test]
    fn memory_is_file_backed_and_shared() {
        let ram = GuestRam::new(32).unwrap();
        assert_eq!(ram.size(), 32 << 20);
        ram.mem.write_obj(0xabcd_u32, GuestAddress(0x1000)).unwrap();
        let region = ram.mem.iter().next().unwrap();
        assert!(region.file_offset().is_some());
        // The write is visible through the file: another process mapping it sees it.
        let mut buf = [0u8; 4];
        use std::os::unix::fs::FileExt;
        ram.file.read_exact_at(&mut buf, 0x1000).unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xabcd);
    }

    #[test]
    fn rejects_tiny_memory() {
        assert!(matches!(GuestRam::new(1), Err(Error::Size { .. })));
    }
}
