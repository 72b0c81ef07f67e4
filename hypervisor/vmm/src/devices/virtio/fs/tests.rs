use std::ffi::CStr;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_INDIRECT_DESC, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap,
};
use vmm_sys_util::eventfd::EventFd;

use super::device::{memory_regions, ring_hva};
use super::*;
use crate::devices::virtio::test_util::MockInterrupt;
use crate::devices::virtio::{
    ActivateError, GuestMem, Interrupt, InterruptStatus, VirtioDevice, TYPE_FS, VIRTIO_F_VERSION_1,
};

const QUEUE_SIZE: u16 = 64;
/// Guest memory: two 2 MiB regions with a hole between them, both in one memfd.
const REGION_SIZE: usize = 0x20_0000;
const REGION2: u64 = 0x40_0000;
/// Rings live in the first region, request buffers in the second.
const RING_ADDRS: [u64; 2] = [0x1000, 0x8000];
const RING_ADDRS_AFTER_RESET: [u64; 2] = [0x10000, 0x18000];
const REQ: u64 = REGION2 + 0x1000;
const REPLY: u64 = REGION2 + 0x2000;
const REPLY_LEN: u32 = 512;

const FUSE_LOOKUP: u32 = 1;
const FUSE_INIT: u32 = 26;
const FUSE_ROOT_ID: u64 = 1;
const IN_HEADER_LEN: usize = 40;
const OUT_HEADER_LEN: usize = 16;

// ---------------------------------------------------------------- virtiofsd

/// A virtiofsd serving a fresh temporary directory, killed on drop if still running.
struct Virtiofsd {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

const INSTALL_HINT: &str = "install it with `apt-get install libseccomp-dev libcap-ng-dev && \
    cargo install --locked virtiofsd`, or point WARD_VIRTIOFSD at the binary";

/// virtiofsd from $WARD_VIRTIOFSD, ~/.cargo/bin, $PATH or the distributions' libexec. These
/// tests fail rather than skip without it: the device is only tested against a real backend.
fn virtiofsd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WARD_VIRTIOFSD").map(PathBuf::from) {
        assert!(
            path.is_file(),
            "WARD_VIRTIOFSD={} is not a file: {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    let candidates = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cargo/bin/virtiofsd"))
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join("virtiofsd"))
                .collect::<Vec<_>>(),
        )
        .chain(["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"].map(PathBuf::from));
    for path in candidates {
        if path.is_file() {
            return path;
        }
    }
    panic!("virtiofsd not found (tried ~/.cargo/bin, $PATH, /usr/libexec): {INSTALL_HINT}");
}

impl Virtiofsd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("hello"), b"world").unwrap();
        let socket = dir.path().join("fs.sock");
        let log = File::create(dir.path().join("virtiofsd.log")).unwrap();
        let child = Command::new(virtiofsd_binary())
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(&shared)
            .args(["--cache", "never", "--sandbox", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start virtiofsd");
        let mut daemon = Self { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !daemon.socket.exists() {
            assert!(
                daemon.child.try_wait().unwrap().is_none(),
                "virtiofsd exited before creating its socket: {}",
                daemon.log()
            );
            assert!(Instant::now() < deadline, "no virtiofsd socket after 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("virtiofsd.log")).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        let status = self.child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "virtiofsd exited ({status:?}): {}",
            self.log()
        );
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "virtiofsd still runs {timeout:?} after the frontend went away: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------- guest side

fn memfd(name: &CStr) -> File {
    // SAFETY: `name` is NUL-terminated and the flags are constants.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor was just created and nothing else owns it.
    unsafe { File::from_raw_fd(fd) }
}

/// Guest memory the way the core builds it: regions mapped shared from one memfd.
fn memfd_mem() -> GuestMem {
    let file = Arc::new(memfd(c"ward-fs-test"));
    file.set_len(2 * REGION_SIZE as u64).unwrap();
    let mmap = GuestMemoryMmap::from_ranges_with_files([
        (
            GuestAddress(0),
            REGION_SIZE,
            Some(FileOffset::from_arc(file.clone(), 0)),
        ),
        (
            GuestAddress(REGION2),
            REGION_SIZE,
            Some(FileOffset::from_arc(file, REGION_SIZE as u64)),
        ),
    ])
    .unwrap();
    GuestMemoryAtomic::new(mmap)
}

/// The guest side of a queue: its rings and the kick that the core's ioeventfd would signal.
struct GuestQueue {
    ring: Ring,
    kick: EventFd,
}

/// Fresh queues at `addrs` for `activate`, and their guest sides.
fn queues(mem: &GuestMem, addrs: [u64; 2]) -> (Vec<(Queue, EventFd)>, Vec<GuestQueue>) {
    let guard = mem.memory();
    let mut out = Vec::new();
    let mut guest = Vec::new();
    for addr in addrs {
        let vq = MockSplitQueue::create(&*guard, GuestAddress(addr), QUEUE_SIZE);
        let q: Queue = vq.create_queue().unwrap();
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        guest.push(GuestQueue {
            ring: Ring::of(&q),
            kick: kick.try_clone().unwrap(),
        });
        out.push((q, kick));
    }
    (out, guest)
}

fn in_header(len: usize, opcode: u32, unique: u64, nodeid: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(IN_HEADER_LEN);
    h.extend_from_slice(&(len as u32).to_le_bytes());
    h.extend_from_slice(&opcode.to_le_bytes());
    h.extend_from_slice(&unique.to_le_bytes());
    h.extend_from_slice(&nodeid.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // uid
    h.extend_from_slice(&0u32.to_le_bytes()); // gid
    h.extend_from_slice(&0u32.to_le_bytes()); // pid
    h.extend_from_slice(&0u16.to_le_bytes()); // total_extlen
    h.extend_from_slice(&0u16.to_le_bytes()); // padding
    h
}

fn fuse_init(unique: u64) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&7u32.to_le_bytes()); // major
    body.extend_from_slice(&31u32.to_le_bytes()); // minor
    body.extend_from_slice(&0x2_0000u32.to_le_bytes()); // max_readahead
    body.extend_from_slice(&0u32.to_le_bytes()); // flags
    let mut req = in_header(IN_HEADER_LEN + body.len(), FUSE_INIT, unique, 0);
    req.extend_from_slice(&body);
    req
}

fn fuse_lookup(unique: u64, parent: u64, name: &str) -> Vec<u8> {
    let mut body = name.as_bytes().to_vec();
    body.push(0);
    let mut req = in_header(IN_HEADER_LEN + body.len(), FUSE_LOOKUP, unique, parent);
    req.extend_from_slice(&body);
    req
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A split ring driven by hand as a guest driver would (the mock queue zeroes the indices
/// whenever it is built, so it only lays the rings out).
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
}

impl Ring {
    fn of(q: &Queue) -> Self {
        Self {
            desc: q.desc_table(),
            avail: q.avail_ring(),
            used: q.used_ring(),
        }
    }

    /// Publishes the chain [readable `req`, writable `reply`] at descriptors 0 and 1.
    fn push_request(&self, mem: &GuestMemoryMmap, req: (u64, u32), reply: (u64, u32)) {
        let descs = [
            (req, VRING_DESC_F_NEXT as u16, 1u16),
            (reply, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, ((addr, len), flags, next)) in descs.into_iter().enumerate() {
            let at = self.desc + 16 * i as u64;
            mem.write_obj(addr, GuestAddress(at)).unwrap();
            mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
        let idx: u16 = mem.read_obj(GuestAddress(self.avail + 2)).unwrap();
        let slot = u64::from(idx % QUEUE_SIZE);
        mem.write_obj(0u16, GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        mem.write_obj(idx.wrapping_add(1), GuestAddress(self.avail + 2))
            .unwrap();
    }

    fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// (head, written length) of used entry `i`.
    fn used_entry(&self, mem: &GuestMemoryMmap, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % QUEUE_SIZE);
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }
}

/// Sends one FUSE request through `queue` and returns the reply.
fn round_trip(
    mem: &GuestMem,
    queue: &GuestQueue,
    irq: &MockInterrupt,
    req: &[u8],
    daemon: &Virtiofsd,
) -> Vec<u8> {
    let guard = mem.memory();
    let ring = &queue.ring;
    guard.write_slice(req, GuestAddress(REQ)).unwrap();
    guard
        .write_slice(&[0xaa; REPLY_LEN as usize], GuestAddress(REPLY))
        .unwrap();
    let irqs_before = irq.count();
    let used_before = ring.used_idx(&guard);
    ring.push_request(&guard, (REQ, req.len() as u32), (REPLY, REPLY_LEN));
    queue.kick.write(1).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while ring.used_idx(&guard) == used_before || irq.count() == irqs_before {
        assert!(
            Instant::now() < deadline,
            "no reply from virtiofsd (used idx {}, interrupts {}): {}",
            ring.used_idx(&guard),
            irq.count(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let used_ring = InterruptStatus::USED_RING.bits();
    assert_eq!(
        irq.status() & used_ring,
        used_ring,
        "ISR bit set with the interrupt"
    );
    irq.ack(used_ring);
    assert_eq!(ring.used_idx(&guard), used_before.wrapping_add(1));
    let (head, len) = ring.used_entry(&guard, used_before);
    assert_eq!(head, 0);
    let mut reply = vec![0u8; len as usize];
    guard.read_slice(&mut reply, GuestAddress(REPLY)).unwrap();
    assert!(reply.len() >= OUT_HEADER_LEN, "short FUSE reply {reply:?}");
    assert_eq!(le_u32(&reply, 0) as usize, reply.len(), "out header len");
    reply
}

fn assert_init_reply(reply: &[u8], unique: u64) {
    assert_eq!(
        le_u32(reply, 4),
        0,
        "FUSE_INIT error {}",
        le_u32(reply, 4) as i32
    );
    assert_eq!(le_u64(reply, 8), unique);
    assert_eq!(le_u32(reply, OUT_HEADER_LEN), 7, "FUSE major version");
    assert!(
        le_u32(reply, OUT_HEADER_LEN + 4) >= 27,
        "FUSE minor version"
    );
}

fn activate(
    fs: &mut Fs,
    mem: &GuestMem,
    irq: &Arc<MockInterrupt>,
    addrs: [u64; 2],
) -> Vec<GuestQueue> {
    // EVENT_IDX left out so that every completion interrupts (the test does not move used_event).
    fs.ack_features(VIRTIO_F_VERSION_1 | (1 << VIRTIO_RING_F_INDIRECT_DESC));
    let (qs, guest) = queues(mem, addrs);
    fs.activate(mem.clone(), irq.clone(), qs)
        .unwrap_or_else(|e| panic!("activate: {e}"));
    guest
}

// ---------------------------------------------------------------- unit tests

#[test]
fn config_space_has_tag_and_queue_count() {
    let cfg = FsConfig::new("ward-rootfs", 1).unwrap();
    assert_eq!(cfg.as_bytes().len(), CONFIG_SIZE);
    assert_eq!(&cfg.as_bytes()[..11], b"ward-rootfs");
    assert!(cfg.as_bytes()[11..TAG_LEN].iter().all(|&b| b == 0));
    assert_eq!(&cfg.as_bytes()[TAG_LEN..], &1u32.to_le_bytes());
    assert_eq!(cfg.tag(), "ward-rootfs");
    assert_eq!(cfg.num_request_queues(), 1);

    let full = "x".repeat(TAG_LEN);
    assert_eq!(FsConfig::new(&full, 2).unwrap().tag(), full);
}

#[test]
fn bad_tags_are_refused() {
    assert_eq!(FsConfig::new("", 1), Err(TagError::Empty));
    assert!(matches!(
        FsConfig::new(&"x".repeat(TAG_LEN + 1), 1),
        Err(TagError::TooLong { len: 37, .. })
    ));
    // A multi-byte character that pushes the tag past 36 bytes.
    assert!(matches!(
        FsConfig::new(&format!("{}é", "x".repeat(35)), 1),
        Err(TagError::TooLong { len: 37, .. })
    ));
    assert!(matches!(
        FsConfig::new("a\0b", 1),
        Err(TagError::Nul { .. })
    ));
}

#[test]
fn bad_parameters_fail_before_connecting() {
    let nowhere = Path::new("/nonexistent/fs.sock");
    assert!(matches!(
        Fs::new("t", nowhere, 0, 1024),
        Err(FsError::RequestQueues(0))
    ));
    assert!(matches!(
        Fs::new("t", nowhere, MAX_REQUEST_QUEUES + 1, 1024),
        Err(FsError::RequestQueues(_))
    ));
    assert!(matches!(
        Fs::new("t", nowhere, 1, 1000),
        Err(FsError::QueueSize(1000))
    ));
    assert!(matches!(
        Fs::new("t", nowhere, 1, 0),
        Err(FsError::QueueSize(0))
    ));
    assert!(matches!(
        Fs::new("", nowhere, 1, 1024),
        Err(FsError::Tag(TagError::Empty))
    ));
}

#[test]
fn connect_failure_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock");
    let err = Fs::new("t", &socket, 1, 1024)
        .err()
        .expect("no backend there");
    assert!(matches!(err, FsError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("missing.sock"), "{err}");
}

#[test]
fn memory_without_files_is_refused() {
    let anon = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    assert!(matches!(
        memory_regions(&anon),
        Err(FsError::RegionWithoutFile { addr: 0 })
    ));
    let mem = memfd_mem();
    let regions = memory_regions(&mem.memory()).unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[1].guest_phys_addr, REGION2);
    assert_eq!(regions[1].mmap_offset, REGION_SIZE as u64);
    assert_eq!(regions[1].memory_size, REGION_SIZE as u64);
}

#[test]
fn rings_must_sit_inside_one_region() {
    let mem = memfd_mem();
    let guard = mem.memory();
    let a = ring_hva(&guard, 0, "used ring", 0x1000, 16).unwrap();
    let b = ring_hva(&guard, 0, "used ring", 0x1010, 16).unwrap();
    assert_eq!(b - a, 0x10);
    // Runs past the end of region 1, into the hole.
    let end = REGION_SIZE as u64 - 8;
    let err = ring_hva(&guard, 1, "descriptor table", end, 16).unwrap_err();
    assert!(err.to_string().contains("queue 1"), "{err}");
    // In the hole, and past the end of memory.
    assert!(ring_hva(&guard, 0, "used ring", REGION_SIZE as u64 + 0x1000, 8).is_err());
    assert!(ring_hva(&guard, 0, "used ring", u64::MAX, 8).is_err());
}

// ---------------------------------------------------------------- against virtiofsd

#[test]
fn handshake_with_virtiofsd() {
    let mut daemon = Virtiofsd::start();
    let fs = Fs::new("shared", &daemon.socket, 1, QUEUE_SIZE).unwrap();
    assert_eq!(fs.device_type(), TYPE_FS);
    assert_eq!(fs.tag(), "shared");
    assert_eq!(fs.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    let features = fs.device_features();
    assert_ne!(features & VIRTIO_F_VERSION_1, 0);
    assert_eq!(features & !SUPPORTED_FEATURES, 0, "{features:#x}");
    // virtiofsd 1.x offers all three.
    let proto = fs.protocol_features();
    assert!(proto.contains(vhost::vhost_user::VhostUserProtocolFeatures::MQ));
    assert!(proto.contains(vhost::vhost_user::VhostUserProtocolFeatures::REPLY_ACK));

    let mut cfg = [0u8; CONFIG_SIZE];
    fs.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], b"shared");
    assert_eq!(&cfg[TAG_LEN..], &1u32.to_le_bytes());
    daemon.assert_running();

    drop(fs);
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "virtiofsd {status}: {}", daemon.log());
}

#[test]
fn too_many_request_queues_are_refused_by_queue_count() {
    let daemon = Virtiofsd::start();
    let err = Fs::new("shared", &daemon.socket, 2, QUEUE_SIZE)
        .err()
        .expect("virtiofsd has one request queue");
    assert!(
        matches!(
            err,
            FsError::BackendQueues {
                backend: 2,
                needed: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn activation_checks_queues_and_memory() {
    let mut daemon = Virtiofsd::start();
    let mut fs = Fs::new("shared", &daemon.socket, 1, QUEUE_SIZE).unwrap();
    let irq = Arc::new(MockInterrupt::default());
    let mem = memfd_mem();
    let (mut qs, _kicks) = queues(&mem, RING_ADDRS);
    qs.pop();
    assert!(matches!(
        fs.activate(mem.clone(), irq.clone(), qs),
        Err(ActivateError::QueueCount {
            expected: 2,
            got: 1
        })
    ));

    let anon = GuestMemoryAtomic::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), REGION_SIZE)]).unwrap(),
    );
    let (qs, _kicks) = queues(&anon, RING_ADDRS);
    let err = fs.activate(anon, irq.clone(), qs).unwrap_err();
    assert!(err.to_string().contains("not backed by a file"), "{err}");
    daemon.assert_running();

    // The failures left the session usable.
    let guest = activate(&mut fs, &mem, &irq, RING_ADDRS);
    let reply = round_trip(&mem, &guest[1], &irq, &fuse_init(1), &daemon);
    assert_init_reply(&reply, 1);
    assert!(fs.reset());
    drop(fs);
    assert!(daemon.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn fuse_round_trip_reset_and_reactivate() {
    let mut daemon = Virtiofsd::start();
    let mut fs = Fs::new("shared", &daemon.socket, 1, QUEUE_SIZE).unwrap();
    let irq = Arc::new(MockInterrupt::default());
    let mem = memfd_mem();

    let guest = activate(&mut fs, &mem, &irq, RING_ADDRS);
    assert!(matches!(
        fs.activate(mem.clone(), irq.clone(), queues(&mem, RING_ADDRS).0),
        Err(ActivateError::AlreadyActive)
    ));
    daemon.assert_running();

    // FUSE_INIT on the request queue, written by hand as the guest kernel would.
    let reply = round_trip(&mem, &guest[1], &irq, &fuse_init(1), &daemon);
    assert_init_reply(&reply, 1);

    // LOOKUP of a file in the shared directory: its size comes back in the attributes.
    let reply = round_trip(
        &mem,
        &guest[1],
        &irq,
        &fuse_lookup(2, FUSE_ROOT_ID, "hello"),
        &daemon,
    );
    assert_eq!(
        le_u32(&reply, 4),
        0,
        "LOOKUP error {}",
        le_u32(&reply, 4) as i32
    );
    assert_eq!(le_u64(&reply, 8), 2);
    // fuse_entry_out: nodeid, generation, entry_valid, attr_valid, 2 x nsec, then fuse_attr
    // (ino, size, ...).
    assert_ne!(le_u64(&reply, OUT_HEADER_LEN), 0, "nodeid");
    assert_eq!(le_u64(&reply, OUT_HEADER_LEN + 40 + 8), 5, "size of hello");

    // Guest reset: rings stopped, FUSE session dropped; virtiofsd keeps serving.
    assert!(fs.reset());
    daemon.assert_running();
    std::thread::sleep(Duration::from_millis(100));
    daemon.assert_running();

    // The rebooted guest sets the device up again on new rings and starts a new session.
    let guest = activate(&mut fs, &mem, &irq, RING_ADDRS_AFTER_RESET);
    let reply = round_trip(&mem, &guest[1], &irq, &fuse_init(3), &daemon);
    assert_init_reply(&reply, 3);

    // Dropping the device closes the socket: virtiofsd ends by itself, successfully.
    drop(fs);
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "virtiofsd {status}: {}", daemon.log());
}
