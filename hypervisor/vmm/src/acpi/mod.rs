//! ACPI tables: how the guest finds its CPUs, interrupt controllers and devices.
//!
//! A hardware-reduced machine (no PM timer, no SCI, no GPE blocks): RSDP → XSDT →
//! FADT (→ DSDT) and MADT. The DSDT describes the UART, the virtio-mmio devices, the
//! Generic Event Device that signals hotplug, and the hotpluggable CPUs. Power-off and
//! reset go through the FADT's sleep control and reset registers, which live in the GED's
//! register block.

mod dsdt;
mod tables;

use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::layout;
use crate::vstate::memory::GuestMemoryMmap;

pub use dsdt::{DsdtConfig, VirtioAcpiDevice};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ACPI tables take {size} bytes, more than the {max} reserved")]
    TooBig { size: usize, max: u64 },
    #[error("writing the ACPI tables into guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

pub(crate) const OEM_ID: [u8; 6] = *b"WARD  ";
pub(crate) const OEM_TABLE_ID: [u8; 8] = *b"WARDVMM ";
pub(crate) const OEM_REVISION: u32 = 1;

/// Builds every table, writes them to the ACPI area and returns the RSDP's address.
pub fn write_tables(mem: &GuestMemoryMmap, cfg: &DsdtConfig) -> Result<u64, Error> {
    let image = tables::build(layout::ACPI_START, cfg);
    if image.len() as u64 > layout::ACPI_SIZE {
        return Err(Error::TooBig {
            size: image.len(),
            max: layout::ACPI_SIZE,
        });
    }
    mem.write_slice(&image, GuestAddress(layout::ACPI_START))
        .map_err(Error::Write)?;
    Ok(layout::ACPI_START)
}

/// The value that makes `data`'s bytes sum to zero.
pub(crate) fn checksum(data: &[u8]) -> u8 {
    0u8.wrapping_sub(data.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}
