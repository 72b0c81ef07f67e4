//! virtio-vsock packet headers (virtio 1.2, section 5.10.6) and the validation of packets the
//! guest transmits. Every header field is guest-controlled.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::{GuestMemory, GuestMemoryMmap, VolatileSlice};

/// The host's CID, the only destination the guest may address.
pub const HOST_CID: u64 = 2;
pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flags: the sender will receive / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// Largest payload accepted or produced in one packet (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub const MAX_PKT_DATA: u32 = 64 * 1024;

pub const HEADER_LEN: usize = PKT_HEADER_SIZE;

/// A packet header, decoded once so that later guest writes cannot change it under us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    /// The little-endian wire form.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    fn of(pkt: &VsockPacket<'_, ()>) -> Self {
        Self {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("malformed vsock descriptor chain: {0}")]
    Malformed(virtio_vsock::packet::Error),
    #[error("vsock packet claims source CID {got}, the guest is CID {want}")]
    SrcCid { got: u64, want: u64 },
    #[error("vsock packet addressed to CID {0}, only the host (2) is reachable")]
    DstCid(u64),
    #[error("vsock packet of socket type {0}, only stream (1) is supported")]
    Type(u16),
    #[error("vsock packet with unknown op {0}")]
    Op(u16),
    #[error("vsock RW packet without data")]
    EmptyRw,
}

/// A validated guest→host packet: the header, and the payload for OP_RW.
pub struct TxPacket<'a> {
    pub hdr: Header,
    pub data: Option<VolatileSlice<'a, ()>>,
}

/// Parses and validates the packet at the head of a tx chain.
pub fn parse_tx<'a, M>(
    mem: &'a GuestMemoryMmap,
    chain: &mut DescriptorChain<M>,
    guest_cid: u64,
) -> Result<TxPacket<'a>, PacketError>
where
    M: Deref,
    M::Target: GuestMemory,
{
    // The crate checks directions, the header size, len <= MAX_PKT_DATA and that the payload
    // fits its descriptor and guest memory.
    let pkt = VsockPacket::from_tx_virtq_chain(mem, chain, MAX_PKT_DATA)
        .map_err(PacketError::Malformed)?;
    let hdr = Header::of(&pkt);
    if hdr.src_cid != guest_cid {
        return Err(PacketError::SrcCid {
            got: hdr.src_cid,
            want: guest_cid,
        });
    }
    if hdr.dst_cid != HOST_CID {
        return Err(PacketError::DstCid(hdr.dst_cid));
    }
    if hdr.type_ != TYPE_STREAM {
        return Err(PacketError::Type(hdr.type_));
    }
    if !(OP_REQUEST..=OP_CREDIT_REQUEST).contains(&hdr.op) {
        return Err(PacketError::Op(hdr.op));
    }
    let data = if hdr.op == OP_RW {
        match pkt.data_slice() {
            Some(d) if !d.is_empty() => Some(*d),
            _ => return Err(PacketError::EmptyRw),
        }
    } else {
        // Control packets carry no payload; whatever the guest attached is ignored.
        None
    };
    Ok(TxPacket { hdr, data })
}
