//! The net device model and its worker.

use std::io;
use std::sync::Arc;

use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::frame::{self, HDR_LEN, MAX_PACKET_LEN};
use super::{NetError, Tap};
use crate::devices::virtio::worker::{EventHandler, Poller, Worker};
use crate::devices::virtio::{
    read_config_bytes, ActivateError, GuestMem, Interrupt, InterruptStatus, VirtioDevice, TYPE_NET,
    VIRTIO_F_VERSION_1,
};

const QUEUE_SIZE: u16 = 256;
/// Receive queue 0, transmit queue 1 (one queue pair, no control queue).
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE, QUEUE_SIZE];
pub(super) const RX_TOKEN: u64 = 0;
pub(super) const TX_TOKEN: u64 = 1;
pub(super) const TAP_TOKEN: u64 = 2;

/// virtio-net device over a tap.
pub struct Net {
    tap: Arc<Tap>,
    mac: [u8; 6],
    mtu: Option<u16>,
    acked_features: u64,
    worker: Option<Worker>,
}

impl Net {
    pub fn new(tap: Arc<Tap>, mac: [u8; 6], mtu: Option<u16>) -> Self {
        Self {
            tap,
            mac,
            mtu,
            acked_features: 0,
            worker: None,
        }
    }

    /// mac[6], status, max_virtqueue_pairs, mtu (virtio 1.2, 5.1.4).
    fn config_bytes(&self) -> [u8; 12] {
        let mut cfg = [0u8; 12];
        cfg[0..6].copy_from_slice(&self.mac);
        cfg[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        cfg[10..12].copy_from_slice(&self.mtu.unwrap_or(0).to_le_bytes());
        cfg
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn device_features(&self) -> u64 {
        let mtu = if self.mtu.is_some() {
            1 << VIRTIO_NET_F_MTU
        } else {
            0
        };
        VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS | mtu
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }

    // The MAC is only writable with VIRTIO_NET_F_CTRL_MAC_ADDR's legacy path, not offered.
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
        let mut queues = queues.into_iter();
        let (Some((rx, rx_evt)), Some((tx, tx_evt)), None) =
            (queues.next(), queues.next(), queues.next())
        else {
            return Err(ActivateError::QueueCount { expected: 2, got });
        };
        let handler = NetHandler::new(mem, interrupt, self.tap.clone(), (rx, rx_evt), (tx, tx_evt));
        self.worker = Some(Worker::spawn("virtio-net", handler)?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        if let Some(worker) = self.worker.take() {
            // A worker that failed on its own is stopped all the same.
            let _ = worker.stop();
        }
        self.acked_features = 0;
        true
    }
}

/// What one pass over the receive side did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RxPass {
    /// Chains put in the used ring.
    pub(super) used: usize,
    /// A packet waits and the guest has no receive buffer: stop reading the tap until the
    /// guest kicks the receive queue.
    pub(super) starved: bool,
}

pub(super) struct NetHandler {
    pub(super) mem: GuestMem,
    pub(super) interrupt: Arc<dyn Interrupt>,
    pub(super) tap: Arc<Tap>,
    pub(super) rx: Queue,
    pub(super) rx_evt: EventFd,
    pub(super) tx: Queue,
    pub(super) tx_evt: EventFd,
    /// The one packet read from the tap and not yet given to the guest: its length in
    /// `rx_buf`.
    pub(super) pending: Option<usize>,
    rx_buf: Box<[u8]>,
    tx_buf: Box<[u8]>,
    /// Whether the tap is in the epoll set.
    tap_polled: bool,
    /// Packets dropped: guest frames the tap refused, tap frames too big for the guest's
    /// buffer.
    pub(super) tx_dropped: u64,
    pub(super) rx_dropped: u64,
}

impl NetHandler {
    pub(super) fn new(
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        tap: Arc<Tap>,
        (rx, rx_evt): (Queue, EventFd),
        (tx, tx_evt): (Queue, EventFd),
    ) -> Self {
        Self {
            mem,
            interrupt,
            tap,
            rx,
            rx_evt,
            tx,
            tx_evt,
            pending: None,
            rx_buf: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
            tx_buf: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
            tap_polled: false,
            tx_dropped: 0,
            rx_dropped: 0,
        }
    }

    /// Sends every available transmit chain to the tap; returns how many it completed.
    pub(super) fn process_tx(&mut self) -> Result<usize, NetError> {
        let guard = self.mem.memory();
        let mem = &*guard;
        let mut used = 0;
        while let Some(chain) = self.tx.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            // A malformed chain is dropped; the guest gets its descriptors back either way.
            if let Ok(pkt) = frame::parse_tx(chain, mem, &mut self.tx_buf) {
                // The tap takes the header as is. A refused frame (tap down, no memory) is
                // lost like on any network.
                match self.tap.write_packet(&self.tx_buf[..pkt.len]) {
                    Ok(n) if n == pkt.len => {}
                    _ => self.tx_dropped += 1,
                }
            } else {
                self.tx_dropped += 1;
            }
            // The device writes nothing into a transmit chain.
            self.tx
                .add_used(mem, head, 0)
                .map_err(|source| NetError::UsedRing {
                    queue: "transmit",
                    source,
                })?;
            used += 1;
        }
        if used > 0 {
            self.interrupt
                .trigger(InterruptStatus::USED_RING)
                .map_err(NetError::Interrupt)?;
        }
        Ok(used)
    }

    /// Moves packets from the tap into receive chains until the tap is empty or the guest
    /// has no buffer left; at most one packet is held back in between.
    pub(super) fn process_rx(&mut self) -> Result<RxPass, NetError> {
        let guard = self.mem.memory();
        let mem = &*guard;
        let mut pass = RxPass::default();
        loop {
            let len = match self.pending {
                Some(len) => len,
                None => match self.tap.read_packet(&mut self.rx_buf) {
                    // The tap always prefixes a header; anything shorter is not a packet.
                    Ok(n) if n < HDR_LEN + frame::ETH_HLEN => {
                        if n == 0 {
                            break;
                        }
                        self.rx_dropped += 1;
                        continue;
                    }
                    Ok(n) => {
                        self.pending = Some(n);
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(NetError::TapRead {
                            name: self.tap.name().to_string(),
                            source,
                        })
                    }
                },
            };
            let Some(chain) = self.rx.pop_descriptor_chain(mem) else {
                pass.starved = true;
                break;
            };
            let head = chain.head_index();
            let written = match frame::parse_rx(chain, mem) {
                Ok(bufs) => {
                    // Delivered, or too big for this buffer: either way the packet is done.
                    self.pending = None;
                    match frame::write_rx(mem, &bufs, &mut self.rx_buf[..len]) {
                        Ok(n) => n,
                        Err(_) => {
                            self.rx_dropped += 1;
                            0
                        }
                    }
                }
                // A broken chain goes back empty; the packet waits for the next one.
                Err(_) => 0,
            };
            self.rx
                .add_used(mem, head, written)
                .map_err(|source| NetError::UsedRing {
                    queue: "receive",
                    source,
                })?;
            pass.used += 1;
        }
        if pass.used > 0 {
            self.interrupt
                .trigger(InterruptStatus::USED_RING)
                .map_err(NetError::Interrupt)?;
        }
        Ok(pass)
    }

    /// [`process_rx`](Self::process_rx), then polls the tap only while the guest has
    /// receive buffers.
    fn serve_rx(&mut self, poller: &Poller) -> Result<(), NetError> {
        let pass = self.process_rx()?;
        if pass.starved && self.tap_polled {
            poller.remove(&*self.tap).map_err(|e| self.poll_error(e))?;
            self.tap_polled = false;
        } else if !pass.starved && !self.tap_polled {
            poller
                .add(&*self.tap, TAP_TOKEN, EventSet::IN)
                .map_err(|e| self.poll_error(e))?;
            self.tap_polled = true;
        }
        Ok(())
    }

    fn poll_error(&self, source: io::Error) -> NetError {
        NetError::Poll {
            name: self.tap.name().to_string(),
            source,
        }
    }
}

impl EventHandler for NetHandler {
    type Error = NetError;

    fn register(&mut self, poller: &Poller) -> io::Result<()> {
        poller.add(&self.rx_evt, RX_TOKEN, EventSet::IN)?;
        poller.add(&self.tx_evt, TX_TOKEN, EventSet::IN)?;
        poller.add(&*self.tap, TAP_TOKEN, EventSet::IN)?;
        self.tap_polled = true;
        Ok(())
    }

    fn handle_event(
        &mut self,
        poller: &Poller,
        token: u64,
        _events: EventSet,
    ) -> Result<(), NetError> {
        match token {
            RX_TOKEN => {
                // Reading resets the counter; the queue is then served completely.
                let _ = self.rx_evt.read();
                self.serve_rx(poller)
            }
            TX_TOKEN => {
                let _ = self.tx_evt.read();
                self.process_tx().map(|_| ())
            }
            TAP_TOKEN => self.serve_rx(poller),
            _ => Ok(()),
        }
    }
}
