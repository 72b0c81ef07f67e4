//! The boot vCPU's initial register state for the two entry protocols.
//!
//! - Linux 64-bit boot protocol (bzImage): long mode, paging on with an identity map of
//!   the first GiB, RSI pointing at the zero page.
//! - PVH (ELF vmlinux with a XEN_ELFNOTE_PHYS32_ENTRY note): 32-bit protected mode,
//!   paging off, EBX pointing at `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::gdt::{self, gdt_entry, segment_from_gdt};
use super::layout;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the boot {what} into guest memory at {addr:#x}: {source}")]
    Write {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit Linux boot protocol; the value is RSI (the zero page).
    Linux64 { zero_page: u64 },
    /// PVH 32-bit entry; the value is EBX (the start info).
    Pvh { start_info: u64 },
}

/// General-purpose registers at the kernel's entry point.
pub fn boot_regs(entry: u64, mode: EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Linux64 { zero_page } => {
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            regs.rsi = zero_page;
        }
        EntryMode::Pvh { start_info } => regs.rbx = start_info,
    }
    regs
}

/// FPU state as after FNINIT, with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// The 32-bit flat GDT of the PVH entry.
const PVH_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
];

/// Writes the GDT (and, in 64-bit mode, the page tables) to guest memory and fills the
/// segment and control registers of `sregs` accordingly.
pub fn setup_sregs<M: GuestMemory>(
    mem: &M,
    mode: EntryMode,
    sregs: &mut kvm_sregs,
) -> Result<(), Error> {
    let table = match mode {
        EntryMode::Linux64 { .. } => gdt::BOOT_GDT,
        EntryMode::Pvh { .. } => PVH_GDT,
    };
    for (i, entry) in table.iter().enumerate() {
        write(mem, "GDT", layout::BOOT_GDT_START + i as u64 * 8, *entry)?;
    }
    write(mem, "IDT", layout::BOOT_IDT_START, 0u64)?;
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = 7;

    let code = segment_from_gdt(table[gdt::CODE_INDEX as usize], gdt::CODE_INDEX);
    let data = segment_from_gdt(table[gdt::DATA_INDEX as usize], gdt::DATA_INDEX);
    let tss = segment_from_gdt(table[gdt::TSS_INDEX as usize], gdt::TSS_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::Linux64 { .. } => {
            setup_page_tables(mem)?;
            sregs.cr3 = layout::PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

/// Identity-maps the first GiB with 2 MiB pages: enough for the kernel's 64-bit entry,
/// which builds its own tables right away.
fn setup_page_tables<M: GuestMemory>(mem: &M) -> Result<(), Error> {
    write(mem, "PML4", layout::PML4_START, layout::PDPTE_START | 0x03)?;
    write(mem, "PDPT", layout::PDPTE_START, layout::PDE_START | 0x03)?;
    for i in 0..512u64 {
        write(mem, "PD", layout::PDE_START + i * 8, (i << 21) | 0x83)?;
    }
    Ok(())
}

fn write<M: GuestMemory>(mem: &M, what: &'static str, addr: u64, value: u64) -> Result<(), Error> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| Error::Write { what, addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn long_mode_sregs() {
        let m = mem();
        let mut s = kvm_sregs::default();
        setup_sregs(&m, EntryMode::Linux64 { zero_page: 0x7000 }, &mut s).unwrap();
        assert_eq!(s.cr3, layout::PML4_START);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_eq!(s.cs.l, 1);
        let pde: u64 = m.read_obj(GuestAddress(layout::PDE_START + 8)).unwrap();
        assert_eq!(pde, 0x20_0083);
        let gdt1: u64 = m
            .read_obj(GuestAddress(layout::BOOT_GDT_START + 8))
            .unwrap();
        assert_eq!(gdt1, gdt::BOOT_GDT[1]);
    }

    #[test]
    fn pvh_sregs_are_32_bit_without_paging() {
        let m = mem();
        let mut s = kvm_sregs::default();
        setup_sregs(&m, EntryMode::Pvh { start_info: 0x6000 }, &mut s).unwrap();
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.cs.l, 0);
        assert_eq!(s.cs.db, 1);
        let r = boot_regs(0x100_0000, EntryMode::Pvh { start_info: 0x6000 });
        assert_eq!(r.rbx, 0x6000);
    }
}
