use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
use vmm_sys_util::eventfd::EventFd;

use super::device::RngHandler;
use super::*;
use crate::devices::virtio::test_util::*;
use crate::devices::virtio::{VirtioDevice, TYPE_RNG, VIRTIO_F_VERSION_1};

const W: u16 = VRING_DESC_F_WRITE as u16;
const N: u16 = VRING_DESC_F_NEXT as u16;

fn handler(
    mem: &crate::devices::virtio::GuestMem,
    q: Queue,
    irq: Arc<MockInterrupt>,
) -> RngHandler {
    RngHandler {
        mem: mem.clone(),
        interrupt: irq,
        queue: q,
        evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    }
}

#[test]
fn identity() {
    let rng = Rng::new();
    assert_eq!(rng.device_type(), TYPE_RNG);
    assert_eq!(rng.queue_max_sizes(), &[256]);
    assert_eq!(rng.device_features(), VIRTIO_F_VERSION_1);
}

#[test]
fn fills_writable_buffers() {
    let mem = guest_mem();
    let m = mem.memory();
    let vq = MockSplitQueue::new(&*m, 16);
    push_chain(&vq, &[wr(0x10000, 64), wr(0x20000, 64)], 0);
    let irq = Arc::new(MockInterrupt::default());
    let mut h = handler(&mem, vq.create_queue().unwrap(), irq.clone());
    assert_eq!(h.process_queue().unwrap(), 1);
    assert_eq!(used(&vq), vec![(0, 128)]);
    let mut buf = [0u8; 64];
    m.read_slice(&mut buf, GuestAddress(0x20000)).unwrap();
    assert_ne!(buf, [0u8; 64], "64 random bytes are all zero");
    assert_eq!(irq.count(), 1);
}

#[test]
fn caps_the_fill_per_request() {
    let mem = guest_mem();
    let m = mem.memory();
    let vq = MockSplitQueue::new(&*m, 16);
    push_chain(&vq, &[wr(0x10000, 0x20000), wr(0x30000, 0x20000)], 0);
    let mut h = handler(
        &mem,
        vq.create_queue().unwrap(),
        Arc::new(MockInterrupt::default()),
    );
    h.process_queue().unwrap();
    assert_eq!(used(&vq), vec![(0, MAX_FILL)]);
}

#[test]
fn malformed_chains_are_returned_empty() {
    let mem = guest_mem();
    let m = mem.memory();
    let vq = MockSplitQueue::new(&*m, 16);
    // Device-readable buffer.
    push_chain(&vq, &[rd(0x10000, 64)], 0);
    // Buffer past the end of guest memory.
    push_chain(&vq, &[wr(MEM_SIZE as u64 - 8, 64)], 1);
    // Address that overflows.
    push_chain(&vq, &[wr(u64::MAX - 4, 64)], 2);
    // A loop: 3 -> 4 -> 3.
    push_raw(
        &vq,
        &[
            (3, raw(0x10000, 8, W | N, 4)),
            (4, raw(0x10008, 8, W | N, 3)),
        ],
        3,
    );
    // next index past the queue.
    push_raw(&vq, &[(5, raw(0x10000, 8, W | N, 999))], 5);
    // A good one still works after all that.
    push_chain(&vq, &[wr(0x10000, 16)], 6);
    let mut h = handler(
        &mem,
        vq.create_queue().unwrap(),
        Arc::new(MockInterrupt::default()),
    );
    assert_eq!(h.process_queue().unwrap(), 6);
    assert_eq!(
        used(&vq),
        vec![(0, 0), (1, 0), (2, 0), (3, 0), (5, 0), (6, 16)]
    );
}

#[test]
fn parse_reports_why() {
    let mem = guest_mem();
    let m = mem.memory();
    let vq = MockSplitQueue::new(&*m, 16);
    let chain = vq
        .build_desc_chain(&[wr(0x10000, 8), rd(0x20000, 8)])
        .unwrap();
    assert_eq!(
        parse(chain, &*m),
        Err(RequestError::ReadOnlyBuffer { addr: 0x20000 })
    );
}

#[test]
fn worker_serves_a_kick_and_stops_on_reset() {
    let mem = guest_mem();
    let m = mem.memory();
    let vq = MockSplitQueue::new(&*m, 16);
    let q: Queue = vq.create_queue().unwrap();
    let irq = Arc::new(MockInterrupt::default());
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut rng = Rng::new();
    rng.activate(
        mem.clone(),
        irq.clone(),
        vec![(q, kick.try_clone().unwrap())],
    )
    .unwrap();
    push_chain(&vq, &[wr(0x10000, 32)], 0);
    kick.write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while used(&vq).is_empty() {
        assert!(Instant::now() < deadline, "rng worker did not answer");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(used(&vq), vec![(0, 32)]);
    assert!(rng.reset());
}
