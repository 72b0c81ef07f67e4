//! Builds a guest memory and a descriptor chain from fuzz input.
//!
//! Input layout: one byte N (number of descriptors, 1..=8), then N 16-byte descriptors in the
//! split-ring wire format (addr, len, flags, next: all guest-controlled, including loops and
//! bogus indexes), then the rest of the input is copied into guest memory at DATA_ADDR so that
//! headers the descriptors point at have fuzzer-chosen contents.

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const MEM_SIZE: usize = 0x2_0000;
pub const DATA_ADDR: u64 = 0x1000;
const QUEUE_SIZE: u16 = 16;

pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("small guest memory")
}

/// Writes the chain described by `data` and returns a queue whose first available entry is it.
pub fn build_queue(mem: &GuestMemoryMmap, data: &[u8]) -> Option<Queue> {
    let (&n, rest) = data.split_first()?;
    let n = usize::from(n % 8) + 1;
    if rest.len() < n * 16 {
        return None;
    }
    let (descs, payload) = rest.split_at(n * 16);
    let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
    for (i, d) in descs.chunks_exact(16).enumerate() {
        let addr = u64::from_le_bytes(d[0..8].try_into().ok()?);
        let len = u32::from_le_bytes(d[8..12].try_into().ok()?);
        let flags = u16::from_le_bytes(d[12..14].try_into().ok()?);
        let next = u16::from_le_bytes(d[14..16].try_into().ok()?);
        let raw = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
        vq.desc_table().store(i as u16, raw).ok()?;
    }
    vq.avail().ring().ref_at(0).ok()?.store(0);
    vq.avail().idx().store(1);
    let len = payload.len().min(MEM_SIZE - DATA_ADDR as usize);
    mem.write_slice(&payload[..len], GuestAddress(DATA_ADDR))
        .ok()?;
    vq.create_queue::<Queue>().ok()
}

pub fn first_chain<'a>(
    q: &mut Queue,
    mem: &'a GuestMemoryMmap,
) -> Option<DescriptorChain<&'a GuestMemoryMmap>> {
    debug_assert!(q.ready());
    q.iter(mem).ok()?.next()
}
