//! Loading the guest kernel: an ELF vmlinux (entered through PVH when it carries the
//! PVH note, which skips the decompressor) or a bzImage (64-bit boot protocol).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, GuestAddress};

use super::Error;
use crate::arch::x86_64::layout;
use crate::vstate::memory::GuestMemoryMmap;

/// Where the loaded kernel starts running.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    /// PVH 32-bit entry point.
    Pvh(u64),
    /// 64-bit Linux boot protocol entry point; bzImages also hand over their header.
    Linux64 {
        entry: u64,
        header: Option<setup_header>,
    },
}

pub struct LoadedKernel {
    pub entry: Entry,
    /// The first byte after the kernel image.
    pub end: u64,
}

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// The 64-bit entry point of a bzImage is 0x200 past where its protected-mode part loads.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

pub fn load(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, Error> {
    let ctx = |what: &'static str| {
        let path = path.display().to_string();
        move |source: std::io::Error| Error::KernelIo { path, what, source }
    };
    let mut file = File::open(path).map_err(ctx("opening"))?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(ctx("reading"))?;
    file.seek(SeekFrom::Start(0)).map_err(ctx("reading"))?;
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let bad = |source| Error::Kernel {
        path: path.display().to_string(),
        source,
    };
    if magic == ELF_MAGIC {
        let r = Elf::load(mem, None, &mut file, himem).map_err(bad)?;
        let entry = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => Entry::Pvh(addr.raw_value()),
            _ => Entry::Linux64 {
                entry: r.kernel_load.raw_value(),
                header: None,
            },
        };
        Ok(LoadedKernel {
            entry,
            end: r.kernel_end,
        })
    } else {
        let r = BzImage::load(mem, None, &mut file, himem).map_err(bad)?;
        Ok(LoadedKernel {
            entry: Entry::Linux64 {
                entry: r.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET,
                header: r.setup_header,
            },
            end: r.kernel_end,
        })
    }
}
