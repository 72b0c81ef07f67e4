//! The virtio-fs device: vhost-user negotiation with virtiofsd and the interrupt forwarder.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::config::{FsConfig, TagError};
use crate::devices::virtio::worker::{EventHandler, Poller, Worker};
use crate::devices::virtio::{
    read_config_bytes, ActivateError, GuestMem, Interrupt, InterruptStatus, VirtioDevice, TYPE_FS,
    VIRTIO_F_VERSION_1,
};

/// Virtio features the device passes from the backend to the driver. The rings are split
/// rings (the transport's queues), there is no IOMMU and no notification queue; indirect
/// descriptors and event indices are between the driver and virtiofsd alone.
pub const SUPPORTED_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// vhost-user protocol features we use when the backend offers them: MQ to check the
/// backend's queue count, REPLY_ACK to see every request's failure where it happens,
/// RESET_DEVICE so that a guest reset also ends the backend's FUSE session.
const WANTED_PROTOCOL_FEATURES: VhostUserProtocolFeatures = VhostUserProtocolFeatures::MQ
    .union(VhostUserProtocolFeatures::REPLY_ACK)
    .union(VhostUserProtocolFeatures::RESET_DEVICE);

/// The largest split ring (virtio 1.2, 2.7).
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// SET_VRING_CALL/KICK carry the vring index in 8 bits: at most 256 queues, one is hiprio.
pub const MAX_REQUEST_QUEUES: usize = 255;
/// SET_MEM_TABLE passes one fd per region, at most this many in one message.
const MAX_MEM_REGIONS: usize = 32;

/// How long a vhost-user reply may take; past it the device fails instead of hanging the
/// vCPU that set DRIVER_OK.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// virtiofsd may still be creating its socket when the VMM starts.
const CONNECT_ATTEMPTS: u32 = 10;
const CONNECT_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error("virtio-fs needs 1 to {MAX_REQUEST_QUEUES} request queues, got {0}")]
    RequestQueues(usize),
    #[error("virtio-fs queue size {0} is not a power of two in 1..={MAX_QUEUE_SIZE}")]
    QueueSize(u16),
    #[error("cannot connect to virtiofsd's vhost-user socket {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set timeouts on vhost-user socket {socket}: {source}")]
    Timeout {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("vhost-user {step} on {socket} failed: {source}")]
    Vhost {
        socket: PathBuf,
        step: String,
        #[source]
        source: vhost::Error,
    },
    #[error("the vhost-user backend on {socket} does not offer VIRTIO_F_VERSION_1 (features {features:#x})")]
    NoVersion1 { socket: PathBuf, features: u64 },
    #[error("the vhost-user backend on {socket} has {backend} queues, virtio-fs needs {needed} (1 hiprio + {} request)", needed - 1)]
    BackendQueues {
        socket: PathBuf,
        backend: u64,
        needed: usize,
    },
    #[error("guest memory region at {addr:#x} is not backed by a file; vhost-user needs memfd-backed guest memory")]
    RegionWithoutFile { addr: u64 },
    #[error(
        "guest memory has {0} regions, vhost-user SET_MEM_TABLE takes at most {MAX_MEM_REGIONS}"
    )]
    TooManyRegions(usize),
    #[error("{ring} of virtio-fs queue {queue} ({len} bytes at {addr:#x}) is not inside one guest memory region")]
    Ring {
        queue: usize,
        ring: &'static str,
        addr: u64,
        len: u64,
    },
    #[error("virtio-fs queue {queue} has size {size}, above the device's maximum {max}")]
    RingSize { queue: usize, size: u16, max: u16 },
    #[error("cannot create the call eventfd of virtio-fs queue {queue}: {source}")]
    CallEventFd {
        queue: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the call eventfd of virtio-fs queue {queue}: {source}")]
    CallRead {
        queue: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the virtio-fs interrupt forwarder: {0}")]
    Forwarder(#[source] ActivateError),
    #[error("cannot interrupt the guest for virtio-fs: {0}")]
    Interrupt(#[source] io::Error),
    #[error(
        "the vhost-user connection to {socket} is unusable since an earlier failure: {reason}"
    )]
    Broken { socket: PathBuf, reason: String },
}

/// virtio-fs device whose queues virtiofsd serves over vhost-user.
pub struct Fs {
    socket: PathBuf,
    config: FsConfig,
    queue_sizes: Vec<u16>,
    frontend: Frontend,
    /// What GET_FEATURES returned, vhost-user bits included.
    backend_features: u64,
    /// The protocol features both sides use.
    protocol_features: VhostUserProtocolFeatures,
    acked_features: u64,
    active: Option<Active>,
    /// Set when stopping the backend's rings failed: the connection is no longer trusted.
    broken: Option<String>,
}

/// A started device: the rings the backend runs and the forwarder of their calls.
struct Active {
    queues: usize,
    _forwarder: Worker,
}

impl Fs {
    /// Connects to virtiofsd's socket and negotiates the vhost-user session; the rings are
    /// set up later, when the driver sets DRIVER_OK.
    pub fn new(
        tag: &str,
        socket: &Path,
        num_request_queues: usize,
        queue_size: u16,
    ) -> Result<Self, FsError> {
        if !(1..=MAX_REQUEST_QUEUES).contains(&num_request_queues) {
            return Err(FsError::RequestQueues(num_request_queues));
        }
        if !queue_size.is_power_of_two() || queue_size > MAX_QUEUE_SIZE {
            return Err(FsError::QueueSize(queue_size));
        }
        // Fits: num_request_queues <= MAX_REQUEST_QUEUES.
        let config = FsConfig::new(tag, num_request_queues as u32)?;
        let total = num_request_queues + 1;

        let stream = connect(socket)?;
        let timeout_err = |source| FsError::Timeout {
            socket: socket.to_path_buf(),
            source,
        };
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(timeout_err)?;
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(timeout_err)?;
        let mut frontend = Frontend::from_stream(stream, total as u64);
        let vhost_err = |step: &str| {
            let socket = socket.to_path_buf();
            let step = step.to_string();
            move |source| FsError::Vhost {
                socket,
                step,
                source,
            }
        };

        frontend.set_owner().map_err(vhost_err("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(vhost_err("GET_FEATURES"))?;
        if backend_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(FsError::NoVersion1 {
                socket: socket.to_path_buf(),
                features: backend_features,
            });
        }

        let mut protocol_features = VhostUserProtocolFeatures::empty();
        if backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = frontend
                .get_protocol_features()
                .map_err(vhost_err("GET_PROTOCOL_FEATURES"))?;
            protocol_features = offered & WANTED_PROTOCOL_FEATURES;
            frontend
                .set_protocol_features(protocol_features)
                .map_err(vhost_err("SET_PROTOCOL_FEATURES"))?;
            if protocol_features.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            if protocol_features.contains(VhostUserProtocolFeatures::MQ) {
                let backend = frontend
                    .get_queue_num()
                    .map_err(vhost_err("GET_QUEUE_NUM"))?;
                if backend < total as u64 {
                    return Err(FsError::BackendQueues {
                        socket: socket.to_path_buf(),
                        backend,
                        needed: total,
                    });
                }
            }
        }
        // Without MQ the backend cannot tell its queue count; a missing queue shows as a
        // failed SET_VRING_* at activation.

        Ok(Self {
            socket: socket.to_path_buf(),
            config,
            queue_sizes: vec![queue_size; total],
            frontend,
            backend_features,
            protocol_features,
            acked_features: 0,
            active: None,
            broken: None,
        })
    }

    pub fn tag(&self) -> &str {
        self.config.tag()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The vhost-user protocol features in use (a subset of MQ, REPLY_ACK, RESET_DEVICE).
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol_features
    }

    fn uses_protocol_features(&self) -> bool {
        self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0
    }

    fn vhost_err(&self, step: String, source: vhost::Error) -> FsError {
        FsError::Vhost {
            socket: self.socket.clone(),
            step,
            source,
        }
    }

    /// Hands guest memory and the rings to the backend and starts the call forwarder.
    fn start(
        &mut self,
        mem: &GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<(Queue, EventFd)>,
    ) -> Result<Active, FsError> {
        if let Some(reason) = &self.broken {
            return Err(FsError::Broken {
                socket: self.socket.clone(),
                reason: reason.clone(),
            });
        }
        let mut features = self.acked_features & self.device_features();
        features |= self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.frontend
            .set_features(features)
            .map_err(|e| self.vhost_err("SET_FEATURES".into(), e))?;

        let guard = mem.memory();
        let regions = memory_regions(&guard)?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(|e| self.vhost_err("SET_MEM_TABLE".into(), e))?;

        let calls = (0..queues.len())
            .map(|queue| {
                EventFd::new(libc::EFD_NONBLOCK)
                    .map_err(|source| FsError::CallEventFd { queue, source })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let count = queues.len();
        for (index, ((queue, kick), call)) in queues.iter().zip(&calls).enumerate() {
            if let Err(e) = self.start_ring(&guard, index, queue, kick, call) {
                // The rings already running must not outlive a failed activation.
                let _ = self.stop_rings(index + 1);
                return Err(e);
            }
        }

        let forwarder = CallForwarder {
            calls,
            interrupt,
            pending: false,
        };
        match Worker::spawn("virtio-fs", forwarder) {
            Ok(worker) => Ok(Active {
                queues: count,
                _forwarder: worker,
            }),
            Err(e) => {
                let _ = self.stop_rings(count);
                Err(FsError::Forwarder(e))
            }
        }
    }

    fn start_ring(
        &mut self,
        mem: &GuestMemoryMmap,
        index: usize,
        queue: &Queue,
        kick: &EventFd,
        call: &EventFd,
    ) -> Result<(), FsError> {
        let size = queue.size();
        let max = self.queue_sizes.get(index).copied().unwrap_or(0);
        if size == 0 || size > max {
            return Err(FsError::RingSize {
                queue: index,
                size,
                max,
            });
        }
        let n = u64::from(size);
        let config = VringConfigData {
            queue_max_size: max,
            queue_size: size,
            flags: 0,
            // vhost-user addresses rings by the frontend's virtual addresses, which the
            // backend translates through the table SET_MEM_TABLE gave it.
            desc_table_addr: ring_hva(mem, index, "descriptor table", queue.desc_table(), 16 * n)?,
            used_ring_addr: ring_hva(mem, index, "used ring", queue.used_ring(), 6 + 8 * n)?,
            avail_ring_addr: ring_hva(mem, index, "available ring", queue.avail_ring(), 6 + 2 * n)?,
            log_addr: None,
        };
        let step = |what: &str| format!("{what} of queue {index}");
        self.frontend
            .set_vring_num(index, size)
            .map_err(|e| self.vhost_err(step("SET_VRING_NUM"), e))?;
        self.frontend
            .set_vring_addr(index, &config)
            .map_err(|e| self.vhost_err(step("SET_VRING_ADDR"), e))?;
        self.frontend
            .set_vring_base(index, queue.next_avail())
            .map_err(|e| self.vhost_err(step("SET_VRING_BASE"), e))?;
        self.frontend
            .set_vring_call(index, call)
            .map_err(|e| self.vhost_err(step("SET_VRING_CALL"), e))?;
        self.frontend
            .set_vring_kick(index, kick)
            .map_err(|e| self.vhost_err(step("SET_VRING_KICK"), e))?;
        if self.uses_protocol_features() {
            // With protocol features negotiated rings start disabled (vhost-user "Ring states").
            self.frontend
                .set_vring_enable(index, true)
                .map_err(|e| self.vhost_err(step("SET_VRING_ENABLE"), e))?;
        }
        Ok(())
    }

    /// Stops the first `count` rings (GET_VRING_BASE stops a ring) and resets the backend's
    /// device state where it can; tries every step and returns the first failure.
    fn stop_rings(&mut self, count: usize) -> Result<(), FsError> {
        let mut first_err = None;
        for index in 0..count {
            if self.uses_protocol_features() {
                if let Err(e) = self.frontend.set_vring_enable(index, false) {
                    let e = self.vhost_err(format!("SET_VRING_ENABLE(0) of queue {index}"), e);
                    first_err.get_or_insert(e);
                }
            }
            if let Err(e) = self.frontend.get_vring_base(index) {
                let e = self.vhost_err(format!("GET_VRING_BASE of queue {index}"), e);
                first_err.get_or_insert(e);
            }
        }
        if self
            .protocol_features
            .contains(VhostUserProtocolFeatures::RESET_DEVICE)
        {
            if let Err(e) = self.frontend.reset_device() {
                first_err.get_or_insert(self.vhost_err("RESET_DEVICE".into(), e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        self.backend_features & SUPPORTED_FEATURES
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(self.config.as_bytes(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<(Queue, EventFd)>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if queues.len() != self.queue_sizes.len() {
            return Err(ActivateError::QueueCount {
                expected: self.queue_sizes.len(),
                got: queues.len(),
            });
        }
        let active = self
            .start(&mem, interrupt, queues)
            .map_err(|e| ActivateError::Backend(e.to_string()))?;
        self.active = Some(active);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.acked_features = 0;
        let Some(active) = self.active.take() else {
            return self.broken.is_none();
        };
        let stopped = self.stop_rings(active.queues);
        // Dropping the worker stops the forwarder; the call eventfds close with it.
        drop(active);
        match stopped {
            Ok(()) => true,
            Err(e) => {
                // The backend may still be running the rings on guest memory.
                self.broken = Some(e.to_string());
                false
            }
        }
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        if let Some(active) = self.active.take() {
            // Best effort: the backend also stops everything when the socket closes.
            let _ = self.stop_rings(active.queues);
        }
    }
}

fn connect(socket: &Path) -> Result<UnixStream, FsError> {
    let mut attempt = 1;
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if attempt < CONNECT_ATTEMPTS
                    && matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
            {
                attempt += 1;
                std::thread::sleep(CONNECT_RETRY);
            }
            Err(source) => {
                return Err(FsError::Connect {
                    socket: socket.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// The SET_MEM_TABLE entries: each region's fd, offset in it and our mapping of it.
pub(super) fn memory_regions(
    mem: &GuestMemoryMmap,
) -> Result<Vec<VhostUserMemoryRegionInfo>, FsError> {
    let count = mem.num_regions();
    if count > MAX_MEM_REGIONS {
        return Err(FsError::TooManyRegions(count));
    }
    mem.iter()
        .map(|region| {
            VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|_| {
                FsError::RegionWithoutFile {
                    addr: region.start_addr().0,
                }
            })
        })
        .collect()
}

/// Our virtual address of `len` bytes of ring at guest address `addr`, which must lie in one
/// region (the backend maps regions separately).
pub(super) fn ring_hva(
    mem: &GuestMemoryMmap,
    queue: usize,
    ring: &'static str,
    addr: u64,
    len: u64,
) -> Result<u64, FsError> {
    let err = || FsError::Ring {
        queue,
        ring,
        addr,
        len,
    };
    let ga = GuestAddress(addr);
    let region = mem.find_region(ga).ok_or_else(err)?;
    let start = region.to_region_addr(ga).ok_or_else(err)?;
    let last = start.0.checked_add(len.saturating_sub(1)).ok_or_else(err)?;
    region
        .check_address(vm_memory::MemoryRegionAddress(last))
        .ok_or_else(err)?;
    let host = region.get_host_address(start).map_err(|_| err())?;
    Ok(host as u64)
}

/// Turns the backend's used-buffer notifications into guest interrupts, setting the
/// InterruptStatus bit first (an irqfd handed straight to the backend would skip it).
struct CallForwarder {
    calls: Vec<EventFd>,
    interrupt: Arc<dyn Interrupt>,
    pending: bool,
}

impl EventHandler for CallForwarder {
    type Error = FsError;

    fn register(&mut self, poller: &Poller) -> io::Result<()> {
        for (queue, call) in self.calls.iter().enumerate() {
            poller.add(call, queue as u64, EventSet::IN)?;
        }
        Ok(())
    }

    fn handle_event(
        &mut self,
        _poller: &Poller,
        token: u64,
        _events: EventSet,
    ) -> Result<(), FsError> {
        let Some(call) = usize::try_from(token)
            .ok()
            .and_then(|queue| self.calls.get(queue))
        else {
            return Ok(());
        };
        match call.read() {
            Ok(_) => self.pending = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(source) => {
                return Err(FsError::CallRead {
                    queue: token as usize,
                    source,
                })
            }
        }
        Ok(())
    }

    fn after_events(&mut self, _poller: &Poller) -> Result<(), FsError> {
        // One interrupt covers every queue that completed in this batch.
        if std::mem::take(&mut self.pending) {
            self.interrupt
                .trigger(InterruptStatus::USED_RING)
                .map_err(FsError::Interrupt)?;
        }
        Ok(())
    }
}
