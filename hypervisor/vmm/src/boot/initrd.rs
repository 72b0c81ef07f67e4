//! Placing the initramfs: as high as possible in low RAM (below the MMIO hole and the
//! kernel's `initrd_addr_max`), clear of the kernel.

use std::fs::File;
use std::path::Path;

use vm_memory::{Bytes, GuestAddress};

use super::Error;
use crate::vstate::memory::GuestMemoryMmap;

const PAGE: u64 = 0x1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initrd {
    pub addr: u64,
    pub size: u64,
}

/// The highest page-aligned address for `size` bytes ending at or below `limit`
/// (exclusive), not below `kernel_end`.
pub fn place(size: u64, limit: u64, kernel_end: u64) -> Option<u64> {
    let addr = limit.checked_sub(size)? & !(PAGE - 1);
    (addr >= kernel_end).then_some(addr)
}

/// Loads the initrd below `limit` (exclusive).
pub fn load(
    mem: &GuestMemoryMmap,
    path: &Path,
    limit: u64,
    kernel_end: u64,
) -> Result<Initrd, Error> {
    let io = |what: &'static str| {
        let path = path.display().to_string();
        move |source: std::io::Error| Error::InitrdIo { path, what, source }
    };
    let mut file = File::open(path).map_err(io("opening"))?;
    let size = file.metadata().map_err(io("reading the size of"))?.len();
    let addr = place(size, limit, kernel_end).ok_or_else(|| Error::InitrdTooBig {
        path: path.display().to_string(),
        size,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| Error::InitrdLoad {
            path: path.display().to_string(),
            source,
        })?;
    Ok(Initrd { addr, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_high_and_aligned() {
        assert_eq!(place(0x1800, 0x10_0000, 0), Some(0xfe000));
        assert_eq!(place(0x1000, 0x10_0000, 0), Some(0xff000));
    }

    #[test]
    fn refuses_to_overlap_the_kernel() {
        assert_eq!(place(0x8000, 0x10_0000, 0xf9000), None);
        assert_eq!(place(0x20_0000, 0x10_0000, 0), None);
    }
}
