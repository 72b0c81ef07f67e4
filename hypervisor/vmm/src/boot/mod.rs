//! Putting the guest kernel, its initramfs and command line into guest memory, and the
//! boot structures that point at them.

pub mod cmdline;
pub mod initrd;
pub mod kernel;
pub mod params;

use std::path::Path;

use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::{e820, layout, regs::EntryMode};
use crate::vstate::memory::GuestMemoryMmap;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} kernel {path}: {source}")]
    KernelIo {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("loading kernel {path}: {source}")]
    Kernel {
        path: String,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("{what} initrd {path}: {source}")]
    InitrdIo {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("initrd {path} ({size} bytes) does not fit in low guest memory above the kernel")]
    InitrdTooBig { path: String, size: u64 },
    #[error("loading initrd {path}: {source}")]
    InitrdLoad {
        path: String,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("kernel command line: {0}")]
    Cmdline(String),
    #[error("the memory map has {0} entries, more than the boot protocol carries")]
    MemoryMapTooLong(usize),
    #[error("writing the {what} into guest memory: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// What to boot.
pub struct BootSource<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
}

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    pub addr: u64,
    pub mode: EntryMode,
}

/// Loads everything and writes the boot structures; `rsdp` is the ACPI root pointer if
/// the VMM wrote ACPI tables.
pub fn load(
    mem: &GuestMemoryMmap,
    ram: &[(u64, u64)],
    src: &BootSource,
    rsdp: Option<u64>,
) -> Result<BootEntry, Error> {
    let loaded = kernel::load(mem, src.kernel)?;
    let low_ram_end = ram.first().map(|r| r.0 + r.1).unwrap_or(0);
    let initrd = match src.initrd {
        Some(path) => {
            let addr_max = match loaded.entry {
                kernel::Entry::Linux64 {
                    header: Some(h), ..
                } if h.initrd_addr_max != 0 => u64::from(h.initrd_addr_max) + 1,
                _ => low_ram_end,
            };
            Some(initrd::load(
                mem,
                path,
                addr_max.min(low_ram_end),
                loaded.end,
            )?)
        }
        None => None,
    };

    let cmdline = cmdline::to_bytes(src.cmdline)?;
    mem.write_slice(&cmdline, GuestAddress(layout::CMDLINE_START))
        .map_err(|source| Error::Write {
            what: "command line",
            source,
        })?;

    let map = e820::memory_map(ram);
    let info = params::BootInfo {
        map: &map,
        cmdline_len: cmdline.len() - 1,
        initrd,
        rsdp,
    };
    match loaded.entry {
        kernel::Entry::Pvh(addr) => {
            params::write_pvh_start_info(mem, &info)?;
            Ok(BootEntry {
                addr,
                mode: EntryMode::Pvh {
                    start_info: layout::PVH_INFO_START,
                },
            })
        }
        kernel::Entry::Linux64 { entry, header } => {
            params::write_zero_page(mem, header, &info)?;
            Ok(BootEntry {
                addr: entry,
                mode: EntryMode::Linux64 {
                    zero_page: layout::ZERO_PAGE_START,
                },
            })
        }
    }
}
