//! Validation of an rng request: a chain of device-writable buffers inside guest memory.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemory;

use crate::devices::virtio::chain::{self, Buffer, ChainError};

/// Bytes of entropy handed out per request; the device may fill less than offered (5.4.6.1),
/// and a bound keeps one request from holding the worker for long.
pub const MAX_FILL: u32 = 64 * 1024;

/// Most descriptors accepted in one request chain.
const MAX_DESCS: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("invalid rng descriptor chain: {0}")]
    Chain(#[from] ChainError),
    #[error("rng buffer at {addr:#x} is device-readable, the device only writes entropy")]
    ReadOnlyBuffer { addr: u64 },
}

/// The writable buffers of one request, at most [`MAX_FILL`] bytes in all.
#[derive(Debug, PartialEq, Eq)]
pub struct RngRequest {
    pub buffers: Vec<Buffer>,
}

impl RngRequest {
    /// Bytes the device will write: the buffers' total, capped at [`MAX_FILL`].
    pub fn fill_len(&self) -> u32 {
        let total: u64 = self.buffers.iter().map(|b| u64::from(b.len)).sum();
        total.min(u64::from(MAX_FILL)) as u32
    }
}

pub fn parse<M>(
    chain: DescriptorChain<M>,
    mem: &impl GuestMemory,
) -> Result<RngRequest, RequestError>
where
    M: Deref,
    M::Target: GuestMemory,
{
    let buffers = chain::collect(chain, mem, MAX_DESCS)?;
    if let Some(b) = buffers.iter().find(|b| !b.writable) {
        return Err(RequestError::ReadOnlyBuffer { addr: b.addr.0 });
    }
    Ok(RngRequest { buffers })
}
