//! The rng device model and its worker.

use std::io;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemory};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::request::{self, RngRequest};
use crate::devices::virtio::worker::{EventHandler, Poller, Worker};
use crate::devices::virtio::{
    ActivateError, GuestMem, Interrupt, InterruptStatus, VirtioDevice, TYPE_RNG, VIRTIO_F_VERSION_1,
};

const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE];
const QUEUE_TOKEN: u64 = 0;
const CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RngError {
    #[error("host getrandom failed: {0}")]
    Entropy(String),
    #[error("cannot put a used buffer in the rng queue: {0}")]
    UsedRing(virtio_queue::Error),
    #[error("cannot interrupt the guest: {0}")]
    Interrupt(#[source] io::Error),
}

/// virtio-rng device.
#[derive(Default)]
pub struct Rng {
    acked_features: u64,
    worker: Option<Worker>,
}

impl Rng {
    pub fn new() -> Self {
        Self::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
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

    // virtio-rng has no configuration space.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        mut queues: Vec<(Queue, EventFd)>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != 1 {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: queues.len(),
            });
        }
        let Some((queue, evt)) = queues.pop() else {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: 0,
            });
        };
        let handler = RngHandler {
            mem,
            interrupt,
            queue,
            evt,
        };
        self.worker = Some(Worker::spawn("virtio-rng", handler)?);
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

pub(super) struct RngHandler {
    pub(super) mem: GuestMem,
    pub(super) interrupt: Arc<dyn Interrupt>,
    pub(super) queue: Queue,
    pub(super) evt: EventFd,
}

impl RngHandler {
    /// Answers every available request; returns how many it put in the used ring.
    pub(super) fn process_queue(&mut self) -> Result<usize, RngError> {
        let guard = self.mem.memory();
        let mem = &*guard;
        let mut used = 0;
        while let Some(chain) = self.queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            // A malformed chain is returned unused (len 0) rather than dropped, so the guest
            // gets its descriptors back.
            let len = match request::parse(chain, mem) {
                Ok(req) => fill(mem, &req)?,
                Err(_) => 0,
            };
            self.queue
                .add_used(mem, head, len)
                .map_err(RngError::UsedRing)?;
            used += 1;
        }
        if used > 0 {
            self.interrupt
                .trigger(InterruptStatus::USED_RING)
                .map_err(RngError::Interrupt)?;
        }
        Ok(used)
    }
}

/// Writes up to `req.fill_len()` random bytes into the request's buffers.
fn fill(mem: &impl GuestMemory, req: &RngRequest) -> Result<u32, RngError> {
    let mut left = req.fill_len() as usize;
    let mut written = 0u32;
    let mut chunk = [0u8; CHUNK];
    for buf in &req.buffers {
        let mut offset = 0usize;
        while left > 0 && offset < buf.len as usize {
            let n = CHUNK.min(left).min(buf.len as usize - offset);
            getrandom::fill(&mut chunk[..n]).map_err(|e| RngError::Entropy(e.to_string()))?;
            // chain::collect checked the whole buffer against guest memory.
            let Some(addr) = buf.addr.0.checked_add(offset as u64) else {
                return Ok(written);
            };
            if mem
                .write_slice(&chunk[..n], vm_memory::GuestAddress(addr))
                .is_err()
            {
                return Ok(written);
            }
            offset += n;
            left -= n;
            written += n as u32;
        }
    }
    Ok(written)
}

impl EventHandler for RngHandler {
    type Error = RngError;

    fn register(&mut self, poller: &Poller) -> io::Result<()> {
        poller.add(&self.evt, QUEUE_TOKEN, EventSet::IN)
    }

    fn handle_event(
        &mut self,
        _poller: &Poller,
        token: u64,
        _events: EventSet,
    ) -> Result<(), RngError> {
        if token == QUEUE_TOKEN {
            // Reading resets the counter; the queue is then drained completely.
            let _ = self.evt.read();
            self.process_queue()?;
        }
        Ok(())
    }
}
