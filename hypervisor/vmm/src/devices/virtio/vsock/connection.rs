//! One stream connection between a guest port and a host Unix socket, with virtio-vsock credit
//! accounting in both directions.
//!
//! Guest→host: the guest may have at most [`CONN_BUF_ALLOC`] bytes in flight that the host
//! socket has not taken yet; bytes the socket refuses wait in `tx_buf` (never more than that).
//! Host→guest: we read from the socket only as much as the guest's advertised credit allows,
//! and only when an rx buffer is at hand, so nothing host-side is ever buffered.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::packet::{Header, HOST_CID, TYPE_STREAM};

/// Receive buffer we advertise to the guest per connection.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A host client asked for the connection; waiting for the guest's RESPONSE.
    HostInit,
    Established,
}

/// Control packets owed to the guest, sent before any data.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pending {
    pub request: bool,
    pub response: bool,
    pub credit_update: bool,
    pub credit_request: bool,
    /// SHUTDOWN flags to send; 0 for none.
    pub shutdown: u32,
}

impl Pending {
    fn any(&self) -> bool {
        self.request
            || self.response
            || self.credit_update
            || self.credit_request
            || self.shutdown != 0
    }
}

/// Why a connection must be reset.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("guest sent {len} bytes with only {credit} bytes of credit left")]
    CreditExceeded { len: usize, credit: u32 },
    #[error("host socket failed: {0}")]
    Io(#[source] io::Error),
}

pub struct Connection {
    pub stream: UnixStream,
    pub token: u64,
    /// Port on the host side (CID 2).
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
    pub guest_cid: u64,
    pub state: State,
    pub pending: Pending,
    /// Queued in the device's rx work list.
    pub in_rx_list: bool,

    /// Guest→host bytes the host socket has not taken yet.
    tx_buf: Vec<u8>,
    /// Guest→host bytes handed to the host socket.
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,

    /// Host→guest bytes sent.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    credit_requested: bool,

    /// Edge-triggered readiness, cleared when a read would block.
    pub host_readable: bool,
    pub host_eof: bool,
    pub host_hup: bool,
    /// The guest will send no more: shut the socket's write side once `tx_buf` drains.
    pub guest_done_sending: bool,
    /// The guest will receive no more.
    pub guest_done_receiving: bool,
    /// When a connection being closed is reset regardless of its state.
    pub close_deadline: Option<Instant>,
}

impl Connection {
    pub fn new(
        stream: UnixStream,
        token: u64,
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
        state: State,
    ) -> Self {
        Self {
            stream,
            token,
            local_port,
            peer_port,
            guest_cid,
            state,
            pending: Pending::default(),
            in_rx_list: false,
            tx_buf: Vec::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            credit_requested: false,
            host_readable: false,
            host_eof: false,
            host_hup: false,
            guest_done_sending: false,
            guest_done_receiving: false,
            close_deadline: None,
        }
    }

    /// Records the credit the guest advertises in every packet it sends.
    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        self.credit_requested = false;
    }

    /// Bytes the guest can still take. A guest lying about fwd_cnt only starves itself.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// True when the device has something to put in the rx queue for this connection.
    pub fn has_rx_work(&self) -> bool {
        self.pending.any() || self.wants_to_read()
    }

    fn wants_to_read(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && !self.guest_done_receiving
            && self.peer_credit() > 0
    }

    /// Notes that host data waits for guest credit; returns true if the guest should be asked.
    pub fn starved(&mut self) -> bool {
        if self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && self.peer_credit() == 0
            && !self.credit_requested
        {
            self.credit_requested = true;
            self.pending.credit_request = true;
            return true;
        }
        false
    }

    /// A header from the host side of this connection, carrying our credit.
    pub fn header(&mut self, op: u16, flags: u32, len: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Takes the next control packet owed to the guest: (op, flags).
    pub fn take_control(&mut self) -> Option<(u16, u32)> {
        use super::packet::*;
        let p = &mut self.pending;
        if std::mem::take(&mut p.request) {
            return Some((OP_REQUEST, 0));
        }
        if std::mem::take(&mut p.response) {
            return Some((OP_RESPONSE, 0));
        }
        if p.shutdown != 0 {
            return Some((OP_SHUTDOWN, std::mem::take(&mut p.shutdown)));
        }
        if std::mem::take(&mut p.credit_update) {
            return Some((OP_CREDIT_UPDATE, 0));
        }
        if std::mem::take(&mut p.credit_request) {
            return Some((OP_CREDIT_REQUEST, 0));
        }
        None
    }

    /// Reads host data for the guest into `buf`, bounded by the guest's credit.
    /// Ok(None): nothing to read now; Ok(Some(0)): end of stream.
    pub fn read_host(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ConnError> {
        if !self.wants_to_read() {
            return Ok(None);
        }
        let n = buf.len().min(self.peer_credit() as usize);
        match self.stream.read(&mut buf[..n]) {
            Ok(0) => {
                self.host_eof = true;
                Ok(Some(0))
            }
            Ok(n) => {
                self.rx_cnt += Wrapping(n as u32);
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.host_readable = false;
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(ConnError::Io(e)),
        }
    }

    /// Forwards guest data to the host socket, keeping what it refuses.
    pub fn send_to_host(&mut self, data: &[u8]) -> Result<(), ConnError> {
        let credit = CONN_BUF_ALLOC as usize - self.tx_buf.len();
        if data.len() > credit {
            return Err(ConnError::CreditExceeded {
                len: data.len(),
                credit: credit as u32,
            });
        }
        self.tx_buf.extend_from_slice(data);
        self.flush()
    }

    /// Writes buffered guest data to the host socket as far as it accepts it.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        let mut written = 0;
        while written < self.tx_buf.len() {
            match self.stream.write(&self.tx_buf[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        self.tx_buf.drain(..written);
        self.fwd_cnt += Wrapping(written as u32);
        // Tell the guest about freed space before it runs dry, not after every write.
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CONN_BUF_ALLOC / 2 {
            self.pending.credit_update = true;
        }
        if self.guest_done_sending && self.tx_buf.is_empty() {
            // Half-close: the host client reads EOF but may still send.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    pub fn tx_pending(&self) -> usize {
        self.tx_buf.len()
    }
}
