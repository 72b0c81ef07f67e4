//! The vsock device model and its worker, which bridges guest streams to host Unix sockets.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::{GuestAddressSpace, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::connection::{ConnError, Connection, State};
use super::packet::{self, Header, *};
use super::unix::{self, Handshake};
use crate::devices::virtio::worker::{EventHandler, Poller, Worker};
use crate::devices::virtio::{
    read_config_bytes, ActivateError, GuestMem, Interrupt, InterruptStatus, VirtioDevice,
    TYPE_VSOCK, VIRTIO_F_VERSION_1,
};

const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE; 3];
const RX: usize = 0;
const TX: usize = 1;
const EVT: usize = 2;

const LISTENER_TOKEN: u64 = 3;
const FIRST_STREAM_TOKEN: u64 = 16;

/// First host-side port handed to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1024;
const MAX_CONNECTIONS: usize = 1024;
const MAX_HANDSHAKES: usize = 64;
/// RSTs waiting for rx buffers; past this the oldest are dropped (the guest times out instead).
const MAX_QUEUED_RSTS: usize = 4096;
/// How long a closing connection may wait for its data to drain or for the guest's RST.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock guest CID {0} is reserved (CIDs 0, 1, 2 and u32::MAX are)")]
    ReservedCid(u64),
    #[error("cannot listen on vsock socket {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot put a used buffer in vsock queue {queue}: {source}")]
    UsedRing {
        queue: usize,
        source: virtio_queue::Error,
    },
    #[error("cannot watch a vsock socket: {0}")]
    Epoll(#[source] io::Error),
    #[error("cannot accept on the vsock socket: {0}")]
    Accept(#[source] io::Error),
    #[error("cannot interrupt the guest: {0}")]
    Interrupt(#[source] io::Error),
}

/// virtio-vsock device with the hybrid Unix-socket backend.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    acked_features: u64,
    worker: Option<Worker>,
}

impl Vsock {
    /// Listens on `uds_path` (replacing a stale socket left there, never another kind of file).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VsockError> {
        if guest_cid <= HOST_CID || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::ReservedCid(guest_cid));
        }
        let listen_err = |source| VsockError::Listen {
            path: uds_path.to_path_buf(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(uds_path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(uds_path).map_err(listen_err)?;
            }
        }
        let listener = UnixListener::bind(uds_path).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        Ok(Self {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            acked_features: 0,
            worker: None,
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<(Queue, EventFd)>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let got = queues.len();
        let (queues, evts): (Vec<Queue>, Vec<EventFd>) = queues.into_iter().unzip();
        let (Ok(queues), Ok(evts)) = (
            <[Queue; 3]>::try_from(queues),
            <[EventFd; 3]>::try_from(evts),
        ) else {
            return Err(ActivateError::QueueCount { expected: 3, got });
        };
        let listener = self
            .listener
            .try_clone()
            .map_err(|e| ActivateError::Backend(format!("cannot share the vsock listener: {e}")))?;
        let handler = VsockHandler::new(
            mem,
            interrupt,
            queues,
            evts,
            self.guest_cid,
            self.uds_path.clone(),
            listener,
        );
        self.worker = Some(Worker::spawn("virtio-vsock", handler)?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        if let Some(worker) = self.worker.take() {
            // Dropping the handler closes every host connection.
            let _ = worker.stop();
        }
        self.acked_features = 0;
        true
    }
}

type ConnKey = (u32, u32); // (host port, guest port)

enum Token {
    Handshake,
    Conn(ConnKey),
}

pub(super) struct VsockHandler {
    mem: GuestMem,
    interrupt: Arc<dyn Interrupt>,
    queues: [Queue; 3],
    evts: [EventFd; 3],
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    conns: HashMap<ConnKey, Connection>,
    handshakes: HashMap<u64, Handshake>,
    tokens: HashMap<u64, Token>,
    rx_list: VecDeque<ConnKey>,
    rsts: VecDeque<Header>,
    next_token: u64,
    next_local_port: u32,
    rx_used: bool,
    tx_used: bool,
    /// Host data is moved through here, at most one packet's payload at a time.
    bounce: Vec<u8>,
}

impl VsockHandler {
    pub(super) fn new(
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: [Queue; 3],
        evts: [EventFd; 3],
        guest_cid: u64,
        uds_path: PathBuf,
        listener: UnixListener,
    ) -> Self {
        Self {
            mem,
            interrupt,
            queues,
            evts,
            guest_cid,
            uds_path,
            listener,
            conns: HashMap::new(),
            handshakes: HashMap::new(),
            tokens: HashMap::new(),
            rx_list: VecDeque::new(),
            rsts: VecDeque::new(),
            next_token: FIRST_STREAM_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            rx_used: false,
            tx_used: false,
            bounce: vec![0u8; MAX_PKT_DATA as usize],
        }
    }

    #[cfg(test)]
    pub(super) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    #[cfg(test)]
    pub(super) fn evt(&self, i: usize) -> &EventFd {
        &self.evts[i]
    }

    fn alloc_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.checked_add(1).unwrap_or(FIRST_STREAM_TOKEN);
        t
    }

    /// Next free host-side port, counting up from 1024 and skipping ports in use.
    fn alloc_local_port(&mut self) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|&(local, _)| local == port) {
                return port;
            }
        }
    }

    fn queue_rst(&mut self, local_port: u32, peer_port: u32) {
        if self.rsts.len() == MAX_QUEUED_RSTS {
            self.rsts.pop_front();
        }
        self.rsts.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: local_port,
            dst_port: peer_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Header::default()
        });
    }

    fn schedule_rx(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.starved();
            if !conn.in_rx_list && conn.has_rx_work() {
                conn.in_rx_list = true;
                self.rx_list.push_back(key);
            }
        }
    }

    /// Drops a connection (closing its host socket), optionally telling the guest.
    fn remove(&mut self, poller: &Poller, key: ConnKey, send_rst: bool) {
        if let Some(conn) = self.conns.remove(&key) {
            let _ = poller.remove(&conn.stream);
            self.tokens.remove(&conn.token);
            if send_rst {
                self.queue_rst(key.0, key.1);
            }
        }
    }

    fn watch_conn(
        &mut self,
        poller: &Poller,
        key: ConnKey,
        conn: Connection,
    ) -> Result<(), VsockError> {
        let events =
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        poller
            .add(&conn.stream, conn.token, events)
            .map_err(VsockError::Epoll)?;
        self.tokens.insert(conn.token, Token::Conn(key));
        self.conns.insert(key, conn);
        self.schedule_rx(key);
        Ok(())
    }

    // ---- guest → host ----

    pub(super) fn process_tx(&mut self, poller: &Poller) -> Result<(), VsockError> {
        let guard = self.mem.memory();
        let mem: &GuestMemoryMmap = &guard;
        while let Some(mut chain) = self.queues[TX].pop_descriptor_chain(mem) {
            let head = chain.head_index();
            // Invalid packets are dropped; there is no trustworthy address to answer to.
            if let Ok(pkt) = packet::parse_tx(mem, &mut chain, self.guest_cid) {
                self.handle_guest_packet(poller, &pkt)?;
            }
            self.queues[TX]
                .add_used(mem, head, 0)
                .map_err(|source| VsockError::UsedRing { queue: TX, source })?;
            self.tx_used = true;
        }
        Ok(())
    }

    fn handle_guest_packet(
        &mut self,
        poller: &Poller,
        pkt: &TxPacket<'_>,
    ) -> Result<(), VsockError> {
        let hdr = &pkt.hdr;
        let key = (hdr.dst_port, hdr.src_port);
        let Some(conn) = self.conns.get_mut(&key) else {
            match hdr.op {
                OP_REQUEST => self.connect_to_host(poller, hdr)?,
                OP_RST => {}
                _ => self.queue_rst(key.0, key.1),
            }
            return Ok(());
        };
        conn.update_peer_credit(hdr);
        let outcome: Result<(), ConnError> = match (hdr.op, conn.state) {
            (OP_RST, _) => {
                self.remove(poller, key, false);
                return Ok(());
            }
            (OP_RESPONSE, State::HostInit) => {
                conn.state = State::Established;
                conn.close_deadline = None;
                let ok = format!("OK {}\n", conn.local_port);
                // A fresh socket's buffer takes a dozen bytes; if not, the client is broken.
                conn.stream.write_all(ok.as_bytes()).map_err(ConnError::Io)
            }
            (OP_RW, State::Established) => {
                let data = pkt.data.as_ref().map_or(0, |d| d.len());
                let mut buf = vec![0u8; data];
                if let Some(d) = &pkt.data {
                    d.copy_to(&mut buf[..]);
                }
                conn.send_to_host(&buf)
            }
            (OP_CREDIT_UPDATE, State::Established) => Ok(()),
            (OP_CREDIT_REQUEST, State::Established) => {
                conn.pending.credit_update = true;
                Ok(())
            }
            (OP_SHUTDOWN, State::Established) => {
                if hdr.flags & SHUTDOWN_RCV != 0 {
                    conn.guest_done_receiving = true;
                }
                if hdr.flags & SHUTDOWN_SEND != 0 {
                    conn.guest_done_sending = true;
                }
                if conn.guest_done_receiving && conn.guest_done_sending {
                    // Full close: finish forwarding what we hold, then answer RST.
                    conn.close_deadline
                        .get_or_insert(Instant::now() + CLOSE_TIMEOUT);
                }
                conn.flush()
            }
            // Anything else is a protocol violation from the guest.
            _ => {
                self.remove(poller, key, true);
                return Ok(());
            }
        };
        self.settle(poller, key, outcome);
        Ok(())
    }

    /// After guest or host activity on a connection: reset it on error, finish a close whose
    /// data has drained, and queue whatever it now owes the guest.
    fn settle(&mut self, poller: &Poller, key: ConnKey, outcome: Result<(), ConnError>) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        let closed_by_guest =
            conn.guest_done_receiving && conn.guest_done_sending && conn.tx_pending() == 0;
        if outcome.is_err() || closed_by_guest {
            self.remove(poller, key, true);
            return;
        }
        self.schedule_rx(key);
    }

    fn connect_to_host(&mut self, poller: &Poller, hdr: &Header) -> Result<(), VsockError> {
        let key = (hdr.dst_port, hdr.src_port);
        if self.conns.len() >= MAX_CONNECTIONS {
            self.queue_rst(key.0, key.1);
            return Ok(());
        }
        let path = unix::port_path(&self.uds_path, hdr.dst_port);
        let Ok(stream) = unix::connect_nonblocking(&path) else {
            // Nothing listens there (or it is overloaded): refuse like a closed port.
            self.queue_rst(key.0, key.1);
            return Ok(());
        };
        let token = self.alloc_token();
        let mut conn = Connection::new(
            stream,
            token,
            key.0,
            key.1,
            self.guest_cid,
            State::Established,
        );
        conn.update_peer_credit(hdr);
        conn.pending.response = true;
        self.watch_conn(poller, key, conn)
    }

    // ---- host → guest ----

    fn accept_clients(&mut self, poller: &Poller) -> Result<(), VsockError> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.handshakes.len() >= MAX_HANDSHAKES
                        || stream.set_nonblocking(true).is_err()
                    {
                        continue; // dropping the stream closes it
                    }
                    let token = self.alloc_token();
                    poller
                        .add(&stream, token, EventSet::IN)
                        .map_err(VsockError::Epoll)?;
                    self.tokens.insert(token, Token::Handshake);
                    self.handshakes.insert(token, Handshake::new(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Per-client failures (the client went away) do not stop the listener.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(VsockError::Accept(e)),
            }
        }
    }

    fn handle_handshake(&mut self, poller: &Poller, token: u64) -> Result<(), VsockError> {
        let Some(hs) = self.handshakes.get_mut(&token) else {
            return Ok(());
        };
        let port = match hs.poll() {
            Ok(None) => return Ok(()),
            Ok(Some(port)) => Some(port),
            Err(_) => None,
        };
        let Some(hs) = self.handshakes.remove(&token) else {
            return Ok(());
        };
        self.tokens.remove(&token);
        let _ = poller.remove(&hs.stream);
        let Some(peer_port) = port else {
            return Ok(()); // malformed: close the client
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            return Ok(());
        }
        let local_port = self.alloc_local_port();
        let mut conn = Connection::new(
            hs.stream,
            token,
            local_port,
            peer_port,
            self.guest_cid,
            State::HostInit,
        );
        conn.pending.request = true;
        // Until the guest answers, a silent guest must not hold the client forever.
        conn.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT * 5);
        self.watch_conn(poller, (local_port, peer_port), conn)
    }

    fn handle_stream(&mut self, poller: &Poller, key: ConnKey, events: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if events
            .intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR)
        {
            conn.host_readable = true;
        }
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            conn.host_hup = true;
            if conn.host_eof && conn.close_deadline.is_none() {
                // The half-close we already reported became a full close.
                conn.pending.shutdown = SHUTDOWN_RCV | SHUTDOWN_SEND;
                conn.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
        }
        let outcome = if events.contains(EventSet::OUT) {
            conn.flush()
        } else {
            Ok(())
        };
        self.settle(poller, key, outcome);
    }

    /// Fills rx buffers with what the device owes the guest: RSTs first, then connections in
    /// turn, one packet each per round.
    pub(super) fn process_rx(&mut self, poller: &Poller) -> Result<(), VsockError> {
        let guard = self.mem.memory();
        let mem: &GuestMemoryMmap = &guard;
        loop {
            let work = if let Some(rst) = self.rsts.pop_front() {
                Work::Rst(rst)
            } else if let Some(key) = self.rx_list.pop_front() {
                match self.conns.get_mut(&key) {
                    Some(conn) => {
                        conn.in_rx_list = false;
                        Work::Conn(key)
                    }
                    None => continue,
                }
            } else {
                return Ok(());
            };
            let Some(mut chain) = self.queues[RX].pop_descriptor_chain(mem) else {
                // No buffers: the guest kicks the rx queue when it adds some.
                match work {
                    Work::Rst(h) => self.rsts.push_front(h),
                    Work::Conn(key) => {
                        if let Some(conn) = self.conns.get_mut(&key) {
                            conn.in_rx_list = true;
                            self.rx_list.push_front(key);
                        }
                    }
                }
                return Ok(());
            };
            let head = chain.head_index();
            let used_len = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
                // A broken rx buffer is handed back empty; the work waits for the next one.
                Err(_) => {
                    self.requeue(work);
                    Some(0)
                }
                Ok(mut pkt) => match work {
                    Work::Rst(h) => write_packet(&mut pkt, &h, &[]),
                    Work::Conn(key) => self.conn_packet(poller, key, &mut pkt),
                },
            };
            match used_len {
                Some(len) => {
                    self.queues[RX]
                        .add_used(mem, head, len)
                        .map_err(|source| VsockError::UsedRing { queue: RX, source })?;
                    self.rx_used = true;
                }
                // Nothing to send after all: give the buffer back to the ring untouched.
                None => {
                    let q = &mut self.queues[RX];
                    q.set_next_avail(q.next_avail().wrapping_sub(1));
                }
            }
        }
    }

    fn requeue(&mut self, work: Work) {
        match work {
            Work::Rst(h) => self.rsts.push_front(h),
            Work::Conn(key) => self.schedule_rx(key),
        }
    }

    /// Writes this connection's next packet into `pkt`; None when it had nothing to send.
    fn conn_packet(
        &mut self,
        poller: &Poller,
        key: ConnKey,
        pkt: &mut VsockPacket<'_, ()>,
    ) -> Option<u32> {
        let conn = self.conns.get_mut(&key)?;
        if let Some((op, flags)) = conn.take_control() {
            let hdr = conn.header(op, flags, 0);
            let len = write_packet(pkt, &hdr, &[]);
            self.schedule_rx(key);
            return len;
        }
        let room = pkt
            .data_slice()
            .map_or(0, |d| d.len())
            .min(self.bounce.len());
        let outcome = conn.read_host(&mut self.bounce[..room]);
        let len = match outcome {
            Ok(Some(0)) => {
                // The host client stopped sending; if it is gone altogether, say both.
                let flags = if conn.host_hup {
                    SHUTDOWN_RCV | SHUTDOWN_SEND
                } else {
                    SHUTDOWN_SEND
                };
                if conn.host_hup {
                    conn.close_deadline
                        .get_or_insert(Instant::now() + CLOSE_TIMEOUT);
                }
                let hdr = conn.header(OP_SHUTDOWN, flags, 0);
                write_packet(pkt, &hdr, &[])
            }
            Ok(Some(n)) => {
                let hdr = conn.header(OP_RW, 0, n as u32);
                write_packet(pkt, &hdr, &self.bounce[..n])
            }
            Ok(None) => None,
            Err(_) => {
                self.remove(poller, key, false);
                let hdr = Header {
                    src_cid: HOST_CID,
                    dst_cid: self.guest_cid,
                    src_port: key.0,
                    dst_port: key.1,
                    type_: TYPE_STREAM,
                    op: OP_RST,
                    ..Header::default()
                };
                return write_packet(pkt, &hdr, &[]);
            }
        };
        self.schedule_rx(key);
        len
    }

    fn expire_closing(&mut self, poller: &Poller) {
        let now = Instant::now();
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.close_deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            // A host-initiated connection the guest never answered just closes the client.
            let established = self
                .conns
                .get(&key)
                .is_some_and(|c| c.state == State::Established);
            self.remove(poller, key, established);
        }
    }

    fn signal(&mut self) -> Result<(), VsockError> {
        if std::mem::take(&mut self.rx_used) | std::mem::take(&mut self.tx_used) {
            self.interrupt
                .trigger(InterruptStatus::USED_RING)
                .map_err(VsockError::Interrupt)?;
        }
        Ok(())
    }
}

enum Work {
    Rst(Header),
    Conn(ConnKey),
}

/// Writes a header (with `data.len()` as its length) and payload into an rx packet; returns the
/// used length, or 0 when the buffer cannot hold them.
fn write_packet(pkt: &mut VsockPacket<'_, ()>, hdr: &Header, data: &[u8]) -> Option<u32> {
    let mut hdr = *hdr;
    hdr.len = data.len() as u32;
    if !data.is_empty() {
        match pkt.data_slice() {
            Some(slice) if slice.len() >= data.len() => slice.copy_from(data),
            _ => return Some(0),
        }
    }
    if pkt.set_header_from_raw(&hdr.to_bytes()).is_err() {
        return Some(0);
    }
    Some((HEADER_LEN + data.len()) as u32)
}

impl EventHandler for VsockHandler {
    type Error = VsockError;

    fn register(&mut self, poller: &Poller) -> io::Result<()> {
        for (i, evt) in self.evts.iter().enumerate() {
            poller.add(evt, i as u64, EventSet::IN)?;
        }
        poller.add(&self.listener, LISTENER_TOKEN, EventSet::IN)
    }

    fn handle_event(
        &mut self,
        poller: &Poller,
        token: u64,
        events: EventSet,
    ) -> Result<(), VsockError> {
        match token {
            t if t == RX as u64 || t == EVT as u64 => {
                // rx buffers are used in after_events; event buffers are never used (no
                // transport reset events without migration).
                let _ = self.evts[t as usize].read();
            }
            t if t == TX as u64 => {
                let _ = self.evts[TX].read();
                self.process_tx(poller)?;
            }
            LISTENER_TOKEN => self.accept_clients(poller)?,
            t => match self.tokens.get(&t) {
                Some(Token::Handshake) => self.handle_handshake(poller, t)?,
                Some(Token::Conn(key)) => {
                    let key = *key;
                    self.handle_stream(poller, key, events);
                }
                None => {}
            },
        }
        Ok(())
    }

    fn after_events(&mut self, poller: &Poller) -> Result<(), VsockError> {
        self.expire_closing(poller);
        self.process_rx(poller)?;
        self.signal()
    }

    fn timeout_ms(&self) -> i32 {
        if self.conns.values().any(|c| c.close_deadline.is_some()) {
            500
        } else {
            -1
        }
    }
}
