//! Where things live in the guest's physical address space.
//!
//! Low memory holds the boot structures the VMM writes (GDT, page tables, zero page,
//! command line); the 1 GiB below 4 GiB is a hole for device MMIO (virtio-mmio windows,
//! the hotplug register blocks, IOAPIC, LAPIC, KVM's TSS); RAM that does not fit below
//! the hole continues at 4 GiB.

/// Boot GDT and an empty IDT, read by the vCPU before the kernel installs its own.
pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;

/// PVH boot: `hvm_start_info`, then the module list (initrd), then the memory map.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MODLIST_START: u64 = 0x6040;
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Room for the PVH memory map (it ends below the zero page).
pub const PVH_MEMMAP_MAX_ENTRIES: usize = (ZERO_PAGE_START - PVH_MEMMAP_START) as usize / 24;

/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;

/// Initial stack of the boot vCPU (the kernel switches to its own almost at once).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;

/// Identity-mapped boot page tables: PML4, one PDPT, one PD of 2 MiB pages (1 GiB).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;

/// The kernel command line; the x86 boot protocol caps it well below this.
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 4096;

/// Start of the legacy BIOS area; e820 reports it reserved.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables, in the BIOS read-only area where a guest also searches for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_SIZE: u64 = 0x20000;

/// The first byte of "high" memory: kernels load at or above it.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit MMIO hole: no RAM between these.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;

/// virtio-mmio windows, one page each, from here.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Slots for virtio-mmio devices: one per free IRQ line.
pub const VIRTIO_MMIO_SLOTS: u32 = IRQ_VIRTIO_LAST - IRQ_VIRTIO_FIRST + 1;

/// The Generic Event Device's event register (ACPI0013).
pub const GED_START: u64 = 0xfeb0_0000;
pub const GED_SIZE: u64 = 0x1000;
/// CPU hotplug registers (one selected CPU at a time, see `devices::hotplug::cpu`).
pub const CPU_HOTPLUG_START: u64 = 0xfeb0_1000;
pub const CPU_HOTPLUG_SIZE: u64 = 0x1000;
/// virtio-mmio slot hotplug registers (see `devices::hotplug::slots`).
pub const SLOT_HOTPLUG_START: u64 = 0xfeb0_2000;
pub const SLOT_HOTPLUG_SIZE: u64 = 0x1000;

pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const LAPIC_START: u64 = 0xfee0_0000;

/// KVM needs three pages for the TSS and one for the identity map on Intel hosts;
/// they sit in the hole, below the firmware area.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
pub const KVM_TSS_START: u64 = 0xfffb_d000;

/// Legacy 16550 UART (COM1).
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
pub const SERIAL_PORT_SIZE: u16 = 8;
pub const IRQ_SERIAL: u32 = 4;
/// The i8042 controller's data and command ports (only the reset line is emulated).
pub const I8042_PORT_BASE: u16 = 0x60;
pub const I8042_PORT_SIZE: u16 = 5;

/// The GED's interrupt line.
pub const IRQ_GED: u32 = 5;
/// virtio-mmio devices take the remaining IOAPIC pins.
pub const IRQ_VIRTIO_FIRST: u32 = 6;
pub const IRQ_VIRTIO_LAST: u32 = 23;
/// Pins of KVM's in-kernel IOAPIC.
pub const IOAPIC_PINS: u32 = 24;

/// The guest RAM ranges for `mem_size` bytes: one below the hole, one above 4 GiB if
/// needed.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

/// The MMIO window of virtio slot `slot`, and its IRQ.
pub fn virtio_slot(slot: u32) -> Option<(u64, u32)> {
    (slot < VIRTIO_MMIO_SLOTS).then(|| {
        (
            VIRTIO_MMIO_START + u64::from(slot) * 0x1000,
            IRQ_VIRTIO_FIRST + slot,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(512 << 20), vec![(0, 512 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r, vec![(0, MMIO_GAP_START), (MMIO_GAP_END, 1 << 30)]);
    }

    #[test]
    fn fixed_areas_do_not_overlap() {
        const {
            assert!(PVH_MEMMAP_START + 24 * PVH_MEMMAP_MAX_ENTRIES as u64 <= ZERO_PAGE_START);
            assert!(ZERO_PAGE_START + 0x1000 <= BOOT_STACK_POINTER);
            assert!(PDE_START + 0x1000 <= CMDLINE_START);
            assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
            assert!(ACPI_START + ACPI_SIZE <= HIMEM_START);
        }
        let (last, _) = virtio_slot(VIRTIO_MMIO_SLOTS - 1).unwrap();
        assert!(last + 0x1000 <= GED_START);
        assert!(virtio_slot(VIRTIO_MMIO_SLOTS).is_none());
    }
}
