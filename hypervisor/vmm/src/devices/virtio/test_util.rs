//! Helpers for device tests: guest memory, a recording interrupt and descriptor builders.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use super::{GuestMem, Interrupt, InterruptStatus};

/// Guest memory used by device tests: one region at address 0.
pub const MEM_SIZE: usize = 0x40_0000;

pub fn guest_mem() -> GuestMem {
    let mmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    GuestMemoryAtomic::new(mmap)
}

/// Counts triggers and keeps the InterruptStatus register like the real one.
#[derive(Default)]
pub struct MockInterrupt {
    pub status: AtomicU32,
    pub count: AtomicUsize,
}

impl MockInterrupt {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Interrupt for MockInterrupt {
    fn trigger(&self, status: InterruptStatus) -> io::Result<()> {
        self.status.fetch_or(status.bits(), Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// A device-readable descriptor (the builder sets NEXT and the next index).
pub fn rd(addr: u64, len: u32) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, 0, 0))
}

/// A device-writable descriptor.
pub fn wr(addr: u64, len: u32) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(
        addr,
        len,
        VRING_DESC_F_WRITE as u16,
        0,
    ))
}

/// A raw descriptor with explicit flags and next index, for hand-made (broken) chains.
pub fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// Links `descs` into one chain whose head sits at descriptor index `first`.
pub fn linked(descs: &[RawDescriptor], first: u16) -> Vec<RawDescriptor> {
    let n = descs.len();
    descs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = SplitDescriptor::from(*d);
            let (flags, next) = if i + 1 == n {
                (d.flags() & !(VRING_DESC_F_NEXT as u16), 0)
            } else {
                (d.flags() | VRING_DESC_F_NEXT as u16, first + i as u16 + 1)
            };
            RawDescriptor::from(SplitDescriptor::new(d.addr().0, d.len(), flags, next))
        })
        .collect()
}

/// Publishes `descs` as one available chain at descriptor index `first`.
pub fn push_chain<M: vm_memory::GuestMemory>(
    vq: &MockSplitQueue<'_, M>,
    descs: &[RawDescriptor],
    first: u16,
) {
    vq.add_desc_chains(&linked(descs, first), first).unwrap();
}

/// Publishes descriptors exactly as given (flags and next untouched) with `head` as the chain head.
pub fn push_raw<M: vm_memory::GuestMemory>(
    vq: &MockSplitQueue<'_, M>,
    descs: &[(u16, RawDescriptor)],
    head: u16,
) {
    for (i, d) in descs {
        vq.desc_table().store(*i, *d).unwrap();
    }
    let idx = vq.avail().idx().load();
    vq.avail()
        .ring()
        .ref_at(idx as usize % 256)
        .unwrap()
        .store(head);
    vq.avail().idx().store(idx.wrapping_add(1));
}

/// The used ring entries (head index, length) written so far.
pub fn used<M: vm_memory::GuestMemory>(vq: &MockSplitQueue<'_, M>) -> Vec<(u32, u32)> {
    let n = vq.used().idx().load();
    (0..n)
        .map(|i| {
            let e = vq.used().ring().ref_at(i as usize).unwrap().load();
            (e.id(), e.len())
        })
        .collect()
}
