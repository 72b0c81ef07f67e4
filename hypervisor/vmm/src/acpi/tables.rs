//! The static tables (RSDP, XSDT, FADT, MADT) around the DSDT, laid out back to back.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

use super::dsdt::{self, DsdtConfig};
use super::{checksum, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::arch::x86_64::layout;
use crate::devices::hotplug::ged;

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// Appends `table` 8-byte aligned; returns its guest address.
fn place(image: &mut Vec<u8>, base: u64, table: &[u8]) -> u64 {
    while image.len() % 8 != 0 {
        image.push(0);
    }
    let addr = base + image.len() as u64;
    image.extend_from_slice(table);
    addr
}

/// IA-PC boot architecture flags: no VGA, no CMOS RTC (there is none to probe).
const IAPC_NO_VGA: u16 = 1 << 2;
const IAPC_NO_CMOS_RTC: u16 = 1 << 5;

pub fn build(base: u64, cfg: &DsdtConfig) -> Vec<u8> {
    // The RSDP goes first (its address is what the boot protocol hands over); it is
    // written last, once the XSDT's address is known.
    let mut image = vec![0u8; Rsdp::len()];

    let dsdt_addr = place(&mut image, base, &dsdt::build(cfg));

    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .dsdt_64(dsdt_addr);
    fadt.iapc_boot_arch = (IAPC_NO_VGA | IAPC_NO_CMOS_RTC).into();
    let reg = |offset: u64| {
        GAS::new(
            AddressSpace::SystemMemory,
            8,
            0,
            AccessSize::ByteAccess,
            layout::GED_START + offset,
        )
    };
    fadt.sleep_control_reg = reg(ged::SLEEP_CONTROL);
    fadt.sleep_status_reg = reg(ged::SLEEP_STATUS);
    fadt.reset_reg = reg(ged::RESET);
    fadt.reset_value = ged::RESET_VALUE;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"WARDVMM\0").into();
    let fadt_addr = place(&mut image, base, &bytes(&fadt.finalize()));

    let madt_addr = place(&mut image, base, &madt(cfg.boot_vcpus, cfg.max_vcpus));

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place(&mut image, base, &bytes(&xsdt));

    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    image[..rsdp.len()].copy_from_slice(&rsdp);
    image
}

/// Revision 5 makes Linux honour the online-capable flag of the CPUs not yet plugged.
const MADT_REVISION: u8 = 5;

fn madt(boot_vcpus: u32, max_vcpus: u32) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(layout::LAPIC_START as u32),
    );
    for id in 0..max_vcpus.min(255) {
        let status = if id < boot_vcpus {
            EnabledStatus::Enabled
        } else {
            EnabledStatus::DisabledOnlineCapable
        };
        madt.add_structure(ProcessorLocalApic::new(id as u8, id as u8, status));
    }
    madt.add_structure(IoApic::new(0, layout::IOAPIC_START as u32, 0));
    let mut table = bytes(&madt);
    table[8] = MADT_REVISION;
    table[9] = 0;
    table[9] = checksum(&table);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DsdtConfig {
        DsdtConfig {
            boot_vcpus: 2,
            max_vcpus: 4,
            virtio: vec![],
            hotplug_slots: 0,
        }
    }

    #[test]
    fn tables_checksum_and_link() {
        let base = layout::ACPI_START;
        let image = build(base, &cfg());
        assert_eq!(&image[..8], b"RSD PTR ");
        assert_eq!(image[..20].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let xsdt = u64::from_le_bytes(image[24..32].try_into().unwrap()) - base;
        let x = &image[xsdt as usize..];
        assert_eq!(&x[..4], b"XSDT");
        let len = u32::from_le_bytes(x[4..8].try_into().unwrap()) as usize;
        assert_eq!(len, 36 + 16);
        assert_eq!(x[..len].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        for i in 0..2 {
            let at = u64::from_le_bytes(x[36 + 8 * i..44 + 8 * i].try_into().unwrap()) - base;
            let t = &image[at as usize..];
            let tlen = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
            assert_eq!(t[..tlen].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            assert!(&t[..4] == b"FACP" || &t[..4] == b"APIC");
        }
    }

    #[test]
    fn madt_lists_every_possible_cpu() {
        let t = madt(2, 4);
        assert_eq!(t[8], MADT_REVISION);
        // Header (36) + LAPIC address and flags (8), then 4 LAPICs and an IOAPIC.
        assert_eq!(t.len(), 44 + 4 * 8 + 12);
        assert_eq!(t[44 + 4], 1); // CPU 0 enabled
        assert_eq!(t[44 + 3 * 8 + 4], 2); // CPU 3 online-capable
        assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }
}
