//! Validation of virtio-net descriptor chains (virtio 1.2, section 5.1.6), all guest input.
//!
//! A transmit chain is device-readable: a 12-byte `virtio_net_hdr` (the virtio 1.x layout,
//! with `num_buffers`) then one Ethernet frame, split across descriptors any way the driver
//! likes. A receive chain is device-writable and, without VIRTIO_NET_F_MRG_RXBUF, must hold
//! a whole packet (header and frame). Both are bounded by [`MAX_PACKET_LEN`].

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::devices::virtio::chain::{self, Buffer, ChainError};

/// `struct virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers.
pub const HDR_LEN: usize = 12;
/// An Ethernet header: the smallest frame the tap takes.
pub const ETH_HLEN: usize = 14;
/// Header and frame: a 64 KiB GSO packet, its Ethernet header and the virtio header.
pub const MAX_PACKET_LEN: usize = 65562;
/// Most descriptors accepted in one chain (the queue size).
pub const MAX_DESCS: usize = 256;

/// `num_buffers` sits at bytes 10..12 of the header.
const NUM_BUFFERS_OFFSET: usize = 10;
/// Header fields other than `num_buffers`: all zero unless offloads were negotiated.
const OFFLOAD_FIELDS: usize = NUM_BUFFERS_OFFSET;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid net descriptor chain: {0}")]
    Chain(#[from] ChainError),
    #[error("net transmit buffer at {addr:#x} is device-writable")]
    WritableInTx { addr: u64 },
    #[error("net receive buffer at {addr:#x} is device-readable")]
    ReadOnlyInRx { addr: u64 },
    #[error("net chain holds {len} bytes, less than a header and an Ethernet header ({min})")]
    TooShort { len: u64, min: usize },
    #[error("net packet of {len} bytes is longer than {max}")]
    TooLong { len: u64, max: usize },
    #[error("net transmit header asks for offloads that were not negotiated (flags {flags:#x}, gso_type {gso_type:#x})")]
    Offload { flags: u8, gso_type: u8 },
    #[error("cannot access net buffer {addr:#x}+{len:#x} in guest memory")]
    Memory { addr: u64, len: usize },
}

/// A transmit packet copied out of guest memory.
#[derive(Debug, PartialEq, Eq)]
pub struct TxPacket {
    /// Bytes of `buf` the packet fills: the header, then the frame.
    pub len: usize,
}

/// The writable buffers of a receive chain.
#[derive(Debug, PartialEq, Eq)]
pub struct RxBuffers {
    pub buffers: Vec<Buffer>,
    /// How many bytes the buffers hold, at most [`MAX_PACKET_LEN`].
    pub capacity: usize,
}

/// Validates a transmit chain and copies its packet (header, then frame) into `buf`, which
/// must hold [`MAX_PACKET_LEN`] bytes. Without negotiated offloads the header must be
/// all zero but for `num_buffers` (which a driver leaves unset on transmit).
pub fn parse_tx<M>(
    chain: DescriptorChain<M>,
    mem: &impl GuestMemory,
    buf: &mut [u8],
) -> Result<TxPacket, FrameError>
where
    M: Deref,
    M::Target: GuestMemory,
{
    let buffers = chain::collect(chain, mem, MAX_DESCS)?;
    if let Some(b) = buffers.iter().find(|b| b.writable) {
        return Err(FrameError::WritableInTx { addr: b.addr.0 });
    }
    let total: u64 = buffers.iter().map(|b| u64::from(b.len)).sum();
    let max = MAX_PACKET_LEN.min(buf.len());
    if total > max as u64 {
        return Err(FrameError::TooLong { len: total, max });
    }
    // Bounded by MAX_PACKET_LEN just above.
    let len = total as usize;
    if len < HDR_LEN + ETH_HLEN {
        return Err(FrameError::TooShort {
            len: total,
            min: HDR_LEN + ETH_HLEN,
        });
    }
    let mut done = 0usize;
    for b in &buffers {
        let n = b.len as usize;
        mem.read_slice(&mut buf[done..done + n], b.addr)
            .map_err(|_| FrameError::Memory {
                addr: b.addr.0,
                len: n,
            })?;
        done += n;
    }
    if buf[..OFFLOAD_FIELDS].iter().any(|&b| b != 0) {
        return Err(FrameError::Offload {
            flags: buf[0],
            gso_type: buf[1],
        });
    }
    Ok(TxPacket { len })
}

/// Validates a receive chain: device-writable buffers with room for at least a header and
/// an Ethernet header.
pub fn parse_rx<M>(
    chain: DescriptorChain<M>,
    mem: &impl GuestMemory,
) -> Result<RxBuffers, FrameError>
where
    M: Deref,
    M::Target: GuestMemory,
{
    let buffers = chain::collect(chain, mem, MAX_DESCS)?;
    if let Some(b) = buffers.iter().find(|b| !b.writable) {
        return Err(FrameError::ReadOnlyInRx { addr: b.addr.0 });
    }
    let total: u64 = buffers.iter().map(|b| u64::from(b.len)).sum();
    if total < (HDR_LEN + ETH_HLEN) as u64 {
        return Err(FrameError::TooShort {
            len: total,
            min: HDR_LEN + ETH_HLEN,
        });
    }
    Ok(RxBuffers {
        buffers,
        capacity: total.min(MAX_PACKET_LEN as u64) as usize,
    })
}

/// Writes `packet` (header, then frame, as read from the tap) into the receive buffers,
/// with the header the driver expects without offloads: zero, `num_buffers` 1. Returns the
/// used length (the whole packet).
pub fn write_rx(
    mem: &impl GuestMemory,
    rx: &RxBuffers,
    packet: &mut [u8],
) -> Result<u32, FrameError> {
    if packet.len() < HDR_LEN + ETH_HLEN {
        return Err(FrameError::TooShort {
            len: packet.len() as u64,
            min: HDR_LEN + ETH_HLEN,
        });
    }
    if packet.len() > rx.capacity {
        return Err(FrameError::TooLong {
            len: packet.len() as u64,
            max: rx.capacity,
        });
    }
    packet[..NUM_BUFFERS_OFFSET].fill(0);
    packet[NUM_BUFFERS_OFFSET..HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
    let mut done = 0usize;
    for b in &rx.buffers {
        if done == packet.len() {
            break;
        }
        let n = (b.len as usize).min(packet.len() - done);
        write_at(mem, b.addr, &packet[done..done + n])?;
        done += n;
    }
    // capacity >= packet.len() <= MAX_PACKET_LEN: the buffers took it all, and it fits a u32.
    Ok(done as u32)
}

fn write_at(mem: &impl GuestMemory, addr: GuestAddress, data: &[u8]) -> Result<(), FrameError> {
    mem.write_slice(data, addr).map_err(|_| FrameError::Memory {
        addr: addr.0,
        len: data.len(),
    })
}
