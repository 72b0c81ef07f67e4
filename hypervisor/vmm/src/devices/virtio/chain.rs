//! Walks a guest descriptor chain into a bounded, validated list of buffers.
//!
//! virtio-queue's iterator already stops on loops (a chain cannot be longer than the queue) and
//! on unreadable descriptors, but it stops silently; a chain whose last yielded descriptor still
//! says "next" was cut short and must be rejected, not half-processed.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemory};

/// One buffer of a descriptor chain, checked to lie inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (VRING_DESC_F_WRITE); otherwise device-readable.
    pub writable: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("descriptor chain is empty or its head is unreadable")]
    Empty,
    #[error(
        "descriptor chain is cut short (a loop, a bad next index or an unreadable descriptor)"
    )]
    Truncated,
    #[error("descriptor chain has more than {max} descriptors")]
    TooLong { max: usize },
    #[error("buffer {addr:#x}+{len:#x} is not inside guest memory")]
    OutOfMemory { addr: u64, len: u32 },
}

/// Collects the descriptors of `chain`, at most `max_descs` of them.
pub fn collect<M>(
    chain: DescriptorChain<M>,
    mem: &impl GuestMemory,
    max_descs: usize,
) -> Result<Vec<Buffer>, ChainError>
where
    M: Deref,
    M::Target: GuestMemory,
{
    let mut buffers = Vec::new();
    let mut cut_short = false;
    for desc in chain {
        if buffers.len() == max_descs {
            return Err(ChainError::TooLong { max: max_descs });
        }
        let len = desc.len();
        if len > 0 && !mem.check_range(desc.addr(), len as usize) {
            return Err(ChainError::OutOfMemory {
                addr: desc.addr().0,
                len,
            });
        }
        cut_short = desc.has_next();
        buffers.push(Buffer {
            addr: desc.addr(),
            len,
            writable: desc.is_write_only(),
        });
    }
    if buffers.is_empty() {
        return Err(ChainError::Empty);
    }
    if cut_short {
        return Err(ChainError::Truncated);
    }
    Ok(buffers)
}
