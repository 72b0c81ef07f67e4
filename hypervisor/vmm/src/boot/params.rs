//! The structures the kernel reads at entry: the zero page (`boot_params`) for the
//! 64-bit Linux protocol, `hvm_start_info` for PVH. Both carry the memory map, the
//! command line, the initrd and the ACPI RSDP address.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress};

use super::initrd::Initrd;
use super::Error;
use crate::arch::x86_64::e820::E820Entry;
use crate::arch::x86_64::layout;
use crate::vstate::memory::GuestMemoryMmap;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// "Undefined" boot loader ID.
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Everything both protocols describe.
pub struct BootInfo<'a> {
    pub map: &'a [E820Entry],
    pub cmdline_len: usize,
    pub initrd: Option<Initrd>,
    pub rsdp: Option<u64>,
}

/// Writes the zero page; `header` is the bzImage's own setup header when there is one.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    info: &BootInfo,
) -> Result<(), Error> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = info.cmdline_len as u32;
    if let Some(initrd) = info.initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    if let Some(rsdp) = info.rsdp {
        params.acpi_rsdp_addr = rsdp;
    }
    if info.map.len() > params.e820_table.len() {
        return Err(Error::MemoryMapTooLong(info.map.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(info.map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
        };
    }
    params.e820_entries = info.map.len() as u8;
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE_START))
        .map_err(|source| Error::Write {
            what: "zero page",
            source,
        })
}

/// Writes `hvm_start_info`, its module list (the initrd) and memory map.
pub fn write_pvh_start_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), Error> {
    if info.map.len() > layout::PVH_MEMMAP_MAX_ENTRIES {
        return Err(Error::MemoryMapTooLong(info.map.len()));
    }
    let write = |what: &'static str, addr: u64, bytes: &[u8]| {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| Error::Write { what, source })
    };
    let mut memmap = Vec::with_capacity(info.map.len() * 24);
    for e in info.map {
        memmap.extend_from_slice(&e.addr.to_le_bytes());
        memmap.extend_from_slice(&e.size.to_le_bytes());
        memmap.extend_from_slice(&e.kind.to_le_bytes());
        memmap.extend_from_slice(&0u32.to_le_bytes());
    }
    write("PVH memory map", layout::PVH_MEMMAP_START, &memmap)?;
    let nr_modules = match info.initrd {
        Some(initrd) => {
            let mut m = Vec::with_capacity(32);
            m.extend_from_slice(&initrd.addr.to_le_bytes());
            m.extend_from_slice(&initrd.size.to_le_bytes());
            m.extend_from_slice(&0u64.to_le_bytes()); // no module command line
            m.extend_from_slice(&0u64.to_le_bytes());
            write("PVH module list", layout::PVH_MODLIST_START, &m)?;
            1u32
        }
        None => 0,
    };
    let mut s = Vec::with_capacity(56);
    s.extend_from_slice(&XEN_HVM_START_MAGIC.to_le_bytes());
    s.extend_from_slice(&1u32.to_le_bytes()); // version
    s.extend_from_slice(&0u32.to_le_bytes()); // flags
    s.extend_from_slice(&nr_modules.to_le_bytes());
    s.extend_from_slice(&layout::PVH_MODLIST_START.to_le_bytes());
    s.extend_from_slice(&layout::CMDLINE_START.to_le_bytes());
    s.extend_from_slice(&info.rsdp.unwrap_or(0).to_le_bytes());
    s.extend_from_slice(&layout::PVH_MEMMAP_START.to_le_bytes());
    s.extend_from_slice(&(info.map.len() as u32).to_le_bytes());
    s.extend_from_slice(&0u32.to_le_bytes());
    write("PVH start info", layout::PVH_INFO_START, &s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::e820;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn zero_page_carries_map_cmdline_initrd() {
        let m = mem();
        let map = e820::memory_map(&[(0, 64 << 20)]);
        let info = BootInfo {
            map: &map,
            cmdline_len: 10,
            initrd: Some(Initrd {
                addr: 0x200_0000,
                size: 0x1000,
            }),
            rsdp: Some(layout::ACPI_START),
        };
        write_zero_page(&m, None, &info).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.hdr.ramdisk_image }, 0x200_0000);
        assert_eq!({ p.hdr.cmd_line_ptr }, layout::CMDLINE_START as u32);
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.acpi_rsdp_addr }, layout::ACPI_START);
    }

    #[test]
    fn pvh_start_info_layout() {
        let m = mem();
        let map = e820::memory_map(&[(0, 64 << 20)]);
        let info = BootInfo {
            map: &map,
            cmdline_len: 10,
            initrd: Some(Initrd {
                addr: 0x200_0000,
                size: 0x1000,
            }),
            rsdp: None,
        };
        write_pvh_start_info(&m, &info).unwrap();
        let magic: u32 = m.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(magic, XEN_HVM_START_MAGIC);
        let entries: u32 = m
            .read_obj(GuestAddress(layout::PVH_INFO_START + 48))
            .unwrap();
        assert_eq!(entries, 3);
        let module: u64 = m.read_obj(GuestAddress(layout::PVH_MODLIST_START)).unwrap();
        assert_eq!(module, 0x200_0000);
    }
}
