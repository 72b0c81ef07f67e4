//! The guest's physical memory map, as both boot protocols hand it over.

use super::layout;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// RAM from the given ranges, with the legacy BIOS area (EBDA, ACPI tables, ROM
/// shadow) cut out of the first one and reported reserved.
pub fn memory_map(ram: &[(u64, u64)]) -> Vec<E820Entry> {
    let mut map = Vec::new();
    for &(start, size) in ram {
        let end = start + size;
        if start < layout::HIMEM_START && end > layout::HIMEM_START {
            map.push(E820Entry {
                addr: start,
                size: layout::EBDA_START - start,
                kind: E820_RAM,
            });
            map.push(E820Entry {
                addr: layout::EBDA_START,
                size: layout::HIMEM_START - layout::EBDA_START,
                kind: E820_RESERVED,
            });
            map.push(E820Entry {
                addr: layout::HIMEM_START,
                size: end - layout::HIMEM_START,
                kind: E820_RAM,
            });
        } else {
            map.push(E820Entry {
                addr: start,
                size,
                kind: E820_RAM,
            });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_area_is_reserved() {
        let map = memory_map(&layout::ram_ranges(256 << 20));
        assert_eq!(map.len(), 3);
        assert_eq!(map[0].size, layout::EBDA_START);
        assert_eq!(map[1].kind, E820_RESERVED);
        assert!(map[1].addr <= layout::ACPI_START);
        assert_eq!(map[2].addr + map[2].size, 256 << 20);
    }

    #[test]
    fn high_ram_is_its_own_entry() {
        let map = memory_map(&layout::ram_ranges(5 << 30));
        assert_eq!(map.last().unwrap().addr, layout::MMIO_GAP_END);
        assert_eq!(map.last().unwrap().size, 2 << 30);
    }
}
