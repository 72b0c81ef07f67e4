//! Fuzzes the virtio-blk request parser (`block::parse`), as the device runs it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_memory::GuestMemory;
use ward_vmm::devices::virtio::block::{parse, Limits, RequestType, SECTOR_SIZE};

mod common;

const LIMITS: Limits = Limits {
    capacity_sectors: 128,
    max_segments: 6,
    max_data_len: 0x8000,
};

fuzz_target!(|data: &[u8]| {
    let mem = common::guest_memory();
    let Some(mut q) = common::build_queue(&mem, data) else {
        return;
    };
    let Some(chain) = common::first_chain(&mut q, &mem) else {
        return;
    };
    if let Ok(req) = parse(chain, &mem, &LIMITS) {
        // What parse accepts must honour the invariants the device relies on.
        assert!(req.data.len() <= LIMITS.max_segments);
        assert!(req.data_len <= LIMITS.max_data_len);
        for b in &req.data {
            assert!(b.len == 0 || mem.check_range(b.addr, b.len as usize));
        }
        if matches!(req.kind, RequestType::In | RequestType::Out) {
            let end = req.sector + u64::from(req.data_len) / SECTOR_SIZE;
            assert!(end <= LIMITS.capacity_sectors);
        }
    }
});
