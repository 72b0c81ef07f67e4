//! Fuzzes the validation of guest virtio-net chains (`net::parse_tx`, `net::parse_rx`,
//! `net::write_rx`), as the device runs them: the same chain is tried as a transmit chain and
//! as a receive chain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_memory::GuestMemory;
use ward_vmm::devices::virtio::net::{parse_rx, parse_tx, write_rx, MAX_PACKET_LEN};

mod common;

/// virtio_net_hdr_v1 and an Ethernet header: the shortest packet either way.
const MIN_PACKET: usize = 12 + 14;

fuzz_target!(|data: &[u8]| {
    let mem = common::guest_memory();
    let Some(mut q) = common::build_queue(&mem, data) else {
        return;
    };
    if let Some(chain) = common::first_chain(&mut q, &mem) {
        let mut buf = vec![0u8; MAX_PACKET_LEN];
        if let Ok(pkt) = parse_tx(chain, &mem, &mut buf) {
            // What parse_tx accepts must honour the invariants the device relies on.
            assert!((MIN_PACKET..=MAX_PACKET_LEN).contains(&pkt.len));
            assert!(buf[..10].iter().all(|&b| b == 0), "offload header accepted");
        }
    }
    let Some(mut q) = common::build_queue(&mem, data) else {
        return;
    };
    let Some(chain) = common::first_chain(&mut q, &mem) else {
        return;
    };
    if let Ok(rx) = parse_rx(chain, &mem) {
        assert!((MIN_PACKET..=MAX_PACKET_LEN).contains(&rx.capacity));
        for b in &rx.buffers {
            assert!(b.writable);
            assert!(b.len == 0 || mem.check_range(b.addr, b.len as usize));
        }
        // A packet the size of the fuzz input, clamped to what the device reads from the tap.
        let len = data.len().clamp(MIN_PACKET, MAX_PACKET_LEN);
        let mut packet = vec![0x5au8; len];
        match write_rx(&mem, &rx, &mut packet) {
            Ok(n) => {
                assert_eq!(n as usize, len);
                assert!(len <= rx.capacity);
            }
            Err(_) => assert!(len > rx.capacity),
        }
    }
});
