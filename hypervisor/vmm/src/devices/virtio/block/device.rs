//! The block device model and its worker.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemory};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::request::{
    self, Limits, Rejected, Request, RequestType, ID_LEN, SECTOR_SIZE, VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
};
use crate::devices::virtio::chain::Buffer;
use crate::devices::virtio::worker::{EventHandler, Poller, Worker};
use crate::devices::virtio::{
    read_config_bytes, ActivateError, GuestMem, Interrupt, InterruptStatus, VirtioDevice,
    TYPE_BLOCK, VIRTIO_F_VERSION_1,
};

const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: &[u16] = &[QUEUE_SIZE];
const QUEUE_TOKEN: u64 = 0;

/// Data buffers per request; two more descriptors carry the header and the status.
const SEG_MAX: u32 = 128;
/// Bytes per data buffer.
const SIZE_MAX: u32 = 1 << 20;
/// Host memory used to move data between the image and guest memory.
const BOUNCE_LEN: usize = 64 * 1024;

const VIRTIO_BLK_F_SIZE_MAX: u64 = 1 << 1;
const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// How to build a block device.
#[derive(Clone, Debug)]
pub struct BlockConfig {
    /// Raw disk image (a regular file or a block device).
    pub path: PathBuf,
    pub read_only: bool,
    /// Serial answered to GET_ID; only its first 20 bytes are used.
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open block image {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot size block image {path}: {source}")]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot share the block image with the worker: {0}")]
    Dup(#[source] io::Error),
    #[error("cannot put a used buffer in the block queue: {0}")]
    UsedRing(virtio_queue::Error),
    #[error("cannot interrupt the guest: {0}")]
    Interrupt(#[source] io::Error),
}

/// virtio-blk device over a raw image.
pub struct Block {
    file: File,
    read_only: bool,
    id: [u8; ID_LEN],
    capacity_sectors: u64,
    acked_features: u64,
    worker: Option<Worker>,
}

impl Block {
    pub fn new(config: &BlockConfig) -> Result<Self, BlockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(&config.path)
            .map_err(|source| BlockError::Open {
                path: config.path.clone(),
                source,
            })?;
        // Seeking to the end also sizes block devices, whose metadata length is 0.
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: config.path.clone(),
                source,
            })?;
        let mut id = [0u8; ID_LEN];
        let n = config.id.len().min(ID_LEN);
        id[..n].copy_from_slice(&config.id.as_bytes()[..n]);
        Ok(Self {
            file,
            read_only: config.read_only,
            id,
            capacity_sectors: len / SECTOR_SIZE,
            acked_features: 0,
            worker: None,
        })
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    fn config_bytes(&self) -> [u8; 16] {
        let mut cfg = [0u8; 16];
        cfg[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        cfg[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        cfg
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn device_features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH | ro
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }

    // Every field we expose is read-only (writeback mode is not offered).
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
        let file = self
            .file
            .try_clone()
            .map_err(|e| ActivateError::Backend(BlockError::Dup(e).to_string()))?;
        let handler = BlockHandler {
            backend: Backend {
                file,
                read_only: self.read_only,
                id: self.id,
                limits: limits(self.capacity_sectors),
            },
            mem,
            interrupt,
            queue,
            evt,
        };
        self.worker = Some(Worker::spawn("virtio-blk", handler)?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        if let Some(worker) = self.worker.take() {
            let _ = worker.stop();
        }
        self.acked_features = 0;
        true
    }
}

pub(super) fn limits(capacity_sectors: u64) -> Limits {
    Limits {
        capacity_sectors,
        max_segments: SEG_MAX as usize,
        max_data_len: SEG_MAX * SIZE_MAX,
    }
}

/// The image and what requests may do with it.
pub(super) struct Backend {
    pub(super) file: File,
    pub(super) read_only: bool,
    pub(super) id: [u8; ID_LEN],
    pub(super) limits: Limits,
}

impl Backend {
    /// Carries out a valid request; returns the status and the data bytes written to the guest.
    fn execute(&self, mem: &impl GuestMemory, req: &Request) -> (u8, u32) {
        let done = match req.kind {
            RequestType::In => self.read(mem, req).map(|()| req.data_len),
            RequestType::Out if self.read_only => Err(()),
            RequestType::Out => self.write(mem, req).map(|()| 0),
            RequestType::Flush if self.read_only => Ok(0),
            RequestType::Flush => self.file.sync_all().map(|()| 0).map_err(|_| ()),
            RequestType::GetId => Ok(write_id(mem, &req.data, &self.id)),
            RequestType::Unsupported(_) => return (VIRTIO_BLK_S_UNSUPP, 0),
        };
        match done {
            Ok(n) => (VIRTIO_BLK_S_OK, n),
            Err(()) => (VIRTIO_BLK_S_IOERR, 0),
        }
    }

    fn read(&self, mem: &impl GuestMemory, req: &Request) -> Result<(), ()> {
        let mut bounce = vec![0u8; BOUNCE_LEN];
        let mut offset = req.sector * SECTOR_SIZE;
        for_each_piece(&req.data, |addr, len| {
            let buf = &mut bounce[..len];
            // A short read means the image shrank under us: an I/O error for the guest.
            self.file.read_exact_at(buf, offset).map_err(|_| ())?;
            mem.write_slice(buf, addr).map_err(|_| ())?;
            offset += len as u64;
            Ok(())
        })
    }

    fn write(&self, mem: &impl GuestMemory, req: &Request) -> Result<(), ()> {
        let mut bounce = vec![0u8; BOUNCE_LEN];
        let mut offset = req.sector * SECTOR_SIZE;
        for_each_piece(&req.data, |addr, len| {
            let buf = &mut bounce[..len];
            mem.read_slice(buf, addr).map_err(|_| ())?;
            self.file.write_all_at(buf, offset).map_err(|_| ())?;
            offset += len as u64;
            Ok(())
        })
    }
}

/// Splits the buffers into pieces of at most [`BOUNCE_LEN`] bytes.
fn for_each_piece(
    buffers: &[Buffer],
    mut f: impl FnMut(GuestAddress, usize) -> Result<(), ()>,
) -> Result<(), ()> {
    for b in buffers {
        let mut done = 0usize;
        while done < b.len as usize {
            let len = BOUNCE_LEN.min(b.len as usize - done);
            let addr = b.addr.0.checked_add(done as u64).ok_or(())?;
            f(GuestAddress(addr), len)?;
            done += len;
        }
    }
    Ok(())
}

/// Writes as much of the id as the buffers hold; returns the bytes written.
fn write_id(mem: &impl GuestMemory, buffers: &[Buffer], id: &[u8; ID_LEN]) -> u32 {
    let mut written = 0usize;
    for b in buffers {
        let n = (b.len as usize).min(ID_LEN - written);
        if n == 0 || mem.write_slice(&id[written..written + n], b.addr).is_err() {
            break;
        }
        written += n;
    }
    written as u32
}

pub(super) struct BlockHandler {
    pub(super) backend: Backend,
    pub(super) mem: GuestMem,
    pub(super) interrupt: Arc<dyn Interrupt>,
    pub(super) queue: Queue,
    pub(super) evt: EventFd,
}

impl BlockHandler {
    /// Serves every available request; returns how many it completed.
    pub(super) fn process_queue(&mut self) -> Result<usize, BlockError> {
        let guard = self.mem.memory();
        let mem = &*guard;
        let mut used = 0;
        while let Some(chain) = self.queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let (status, data_written, status_addr) =
                match request::parse(chain, mem, &self.backend.limits) {
                    Ok(req) => {
                        let (status, n) = self.backend.execute(mem, &req);
                        (status, n, Some(req.status))
                    }
                    Err(Rejected { status, .. }) => (VIRTIO_BLK_S_IOERR, 0, status),
                };
            // The used length counts every byte written into the chain, status included.
            let len = match status_addr {
                Some(addr) if mem.write_obj(status, addr).is_ok() => data_written + 1,
                _ => 0,
            };
            self.queue
                .add_used(mem, head, len)
                .map_err(BlockError::UsedRing)?;
            used += 1;
        }
        if used > 0 {
            self.interrupt
                .trigger(InterruptStatus::USED_RING)
                .map_err(BlockError::Interrupt)?;
        }
        Ok(used)
    }
}

impl EventHandler for BlockHandler {
    type Error = BlockError;

    fn register(&mut self, poller: &Poller) -> io::Result<()> {
        poller.add(&self.evt, QUEUE_TOKEN, EventSet::IN)
    }

    fn handle_event(
        &mut self,
        _poller: &Poller,
        token: u64,
        _events: EventSet,
    ) -> Result<(), BlockError> {
        if token == QUEUE_TOKEN {
            let _ = self.evt.read();
            self.process_queue()?;
        }
        Ok(())
    }
}
