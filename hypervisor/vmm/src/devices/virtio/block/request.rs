//! Parsing and validation of one virtio-blk request (virtio 1.2, section 5.2.6).
//!
//! A request is a chain of: a device-readable 16-byte header (type, reserved, sector), data
//! buffers (device-writable for reads and GET_ID, device-readable for writes), and a
//! device-writable status byte at the end. Everything in it comes from the guest.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemory};

use crate::devices::virtio::chain::{self, Buffer, ChainError};

pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;
const HEADER_LEN: u32 = 16;

pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

// SAFETY: Header is plain old data (integers only, no padding: 4 + 4 + 8 bytes), so any byte
// pattern the guest writes is a valid value.
unsafe impl ByteValued for Header {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

impl RequestType {
    fn from_raw(kind: u32) -> Self {
        match kind {
            VIRTIO_BLK_T_IN => Self::In,
            VIRTIO_BLK_T_OUT => Self::Out,
            VIRTIO_BLK_T_FLUSH => Self::Flush,
            VIRTIO_BLK_T_GET_ID => Self::GetId,
            other => Self::Unsupported(other),
        }
    }
}

/// What the device accepts, from its configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub capacity_sectors: u64,
    /// Data buffers per request (the seg_max the device advertises).
    pub max_segments: usize,
    /// Data bytes per request.
    pub max_data_len: u32,
}

/// A validated request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestType,
    pub sector: u64,
    pub data: Vec<Buffer>,
    /// Sum of the data buffers' lengths.
    pub data_len: u32,
    pub status: GuestAddress,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("invalid block descriptor chain: {0}")]
    Chain(#[from] ChainError),
    #[error("block request has {0} descriptors, needs at least a header and a status")]
    TooFewDescriptors(usize),
    #[error("block status descriptor is device-readable")]
    StatusReadOnly,
    #[error("block status descriptor is empty")]
    StatusEmpty,
    #[error("block request header is device-writable")]
    HeaderWritable,
    #[error("block request header is {0} bytes, needs {HEADER_LEN}")]
    HeaderTooShort(u32),
    #[error("cannot read the block request header at {0:#x}")]
    HeaderUnreadable(u64),
    #[error("block {kind:?} data buffer at {addr:#x} has the wrong direction")]
    DataDirection { kind: RequestType, addr: u64 },
    #[error("block request has {count} data buffers, the limit is {max}")]
    TooManySegments { count: usize, max: usize },
    #[error("block request carries {len} data bytes, the limit is {max}")]
    DataTooLong { len: u64, max: u32 },
    #[error("block transfer of {0} bytes is not a whole number of sectors")]
    PartialSector(u32),
    #[error("block transfer of {len} bytes at sector {sector} ends past the capacity of {capacity} sectors")]
    OutOfRange {
        sector: u64,
        len: u32,
        capacity: u64,
    },
    #[error("block FLUSH request carries data")]
    FlushWithData,
    #[error("block GET_ID request has no buffer for the id")]
    GetIdWithoutBuffer,
}

/// A request the device refuses; `status` is where to write IOERR, when the chain has a usable
/// status byte at all (otherwise the chain is returned with nothing written).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{error}")]
pub struct Rejected {
    pub error: RequestError,
    pub status: Option<GuestAddress>,
}

pub fn parse<M>(
    chain: DescriptorChain<M>,
    mem: &impl GuestMemory,
    limits: &Limits,
) -> Result<Request, Rejected>
where
    M: Deref,
    M::Target: GuestMemory,
{
    let no_status = |error: RequestError| Rejected {
        error,
        status: None,
    };
    // header + data + status
    let buffers = chain::collect(chain, mem, limits.max_segments.saturating_add(2))
        .map_err(|e| no_status(e.into()))?;
    let (header, rest) = match buffers.split_first() {
        Some((header, rest)) if !rest.is_empty() => (header, rest),
        _ => return Err(no_status(RequestError::TooFewDescriptors(buffers.len()))),
    };
    let (status, data) = match rest.split_last() {
        Some(split) => split,
        None => return Err(no_status(RequestError::TooFewDescriptors(buffers.len()))),
    };
    if !status.writable {
        return Err(no_status(RequestError::StatusReadOnly));
    }
    if status.len == 0 {
        return Err(no_status(RequestError::StatusEmpty));
    }
    let status_addr = status.addr;
    let reject = |error: RequestError| Rejected {
        error,
        status: Some(status_addr),
    };

    if header.writable {
        return Err(reject(RequestError::HeaderWritable));
    }
    if header.len < HEADER_LEN {
        return Err(reject(RequestError::HeaderTooShort(header.len)));
    }
    let raw: Header = mem
        .read_obj(header.addr)
        .map_err(|_| reject(RequestError::HeaderUnreadable(header.addr.0)))?;
    let kind = RequestType::from_raw(u32::from_le(raw.kind));
    let sector = u64::from_le(raw.sector);

    if data.len() > limits.max_segments {
        return Err(reject(RequestError::TooManySegments {
            count: data.len(),
            max: limits.max_segments,
        }));
    }
    let total: u64 = data.iter().map(|b| u64::from(b.len)).sum();
    if total > u64::from(limits.max_data_len) {
        return Err(reject(RequestError::DataTooLong {
            len: total,
            max: limits.max_data_len,
        }));
    }
    // Bounded by max_data_len (a u32) just above.
    let data_len = total as u32;

    let wants_writable = match kind {
        RequestType::In | RequestType::GetId => Some(true),
        RequestType::Out => Some(false),
        RequestType::Flush | RequestType::Unsupported(_) => None,
    };
    if let Some(writable) = wants_writable {
        if let Some(b) = data.iter().find(|b| b.writable != writable) {
            return Err(reject(RequestError::DataDirection {
                kind,
                addr: b.addr.0,
            }));
        }
    }

    match kind {
        RequestType::In | RequestType::Out => {
            if u64::from(data_len) % SECTOR_SIZE != 0 {
                return Err(reject(RequestError::PartialSector(data_len)));
            }
            let sectors = u64::from(data_len) / SECTOR_SIZE;
            let in_range = sector
                .checked_add(sectors)
                .is_some_and(|end| end <= limits.capacity_sectors);
            if !in_range {
                return Err(reject(RequestError::OutOfRange {
                    sector,
                    len: data_len,
                    capacity: limits.capacity_sectors,
                }));
            }
        }
        RequestType::Flush if !data.is_empty() => {
            return Err(reject(RequestError::FlushWithData));
        }
        RequestType::GetId if data_len == 0 => {
            return Err(reject(RequestError::GetIdWithoutBuffer));
        }
        _ => {}
    }

    Ok(Request {
        kind,
        sector,
        data: data.to_vec(),
        data_len,
        status: status_addr,
    })
}
