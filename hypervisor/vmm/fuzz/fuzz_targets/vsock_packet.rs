//! Fuzzes the validation of guest vsock tx packets (`vsock::parse_tx`), as the device runs it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_vmm::devices::virtio::vsock::parse_tx;

mod common;

const GUEST_CID: u64 = 3;

fuzz_target!(|data: &[u8]| {
    let mem = common::guest_memory();
    let Some(mut q) = common::build_queue(&mem, data) else {
        return;
    };
    let Some(mut chain) = common::first_chain(&mut q, &mem) else {
        return;
    };
    if let Ok(pkt) = parse_tx(&mem, &mut chain, GUEST_CID) {
        // What parse_tx accepts must honour the invariants the device relies on.
        assert_eq!(pkt.hdr.src_cid, GUEST_CID);
        assert_eq!(pkt.hdr.dst_cid, 2);
        if let Some(d) = pkt.data {
            assert_eq!(d.len(), pkt.hdr.len as usize);
            let mut buf = vec![0u8; d.len()];
            d.copy_to(&mut buf[..]);
        }
    }
});
