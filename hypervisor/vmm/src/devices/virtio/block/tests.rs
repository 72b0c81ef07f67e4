use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::{limits, Backend, BlockHandler};
use super::request::*;
use super::*;
use crate::devices::virtio::test_util::*;
use crate::devices::virtio::{GuestMem, VirtioDevice, TYPE_BLOCK, VIRTIO_F_VERSION_1};

const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const DATA2: u64 = 0x30000;
const STATUS: u64 = 0x40000;
const IMAGE_SECTORS: u64 = 64;
const W: u16 = VRING_DESC_F_WRITE as u16;
const N: u16 = VRING_DESC_F_NEXT as u16;

/// A 32 KiB image whose byte i is i % 251.
fn image() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let bytes: Vec<u8> = (0..IMAGE_SECTORS * SECTOR_SIZE)
        .map(|i| (i % 251) as u8)
        .collect();
    f.write_all(&bytes).unwrap();
    f
}

fn config(f: &tempfile::NamedTempFile, read_only: bool) -> BlockConfig {
    BlockConfig {
        path: f.path().to_path_buf(),
        read_only,
        id: "ward-disk-0".into(),
    }
}

fn handler(mem: &GuestMem, q: Queue, f: &tempfile::NamedTempFile, read_only: bool) -> BlockHandler {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(f.path())
        .unwrap();
    let mut id = [0u8; ID_LEN];
    id[..11].copy_from_slice(b"ward-disk-0");
    BlockHandler {
        backend: Backend {
            file,
            read_only,
            id,
            limits: limits(IMAGE_SECTORS),
        },
        mem: mem.clone(),
        interrupt: Arc::new(MockInterrupt::default()),
        queue: q,
        evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    }
}

fn put_header(m: &GuestMemoryMmap, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    m.write_slice(&h, GuestAddress(HDR)).unwrap();
    // A status the device must overwrite.
    m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
}

fn status(m: &GuestMemoryMmap) -> u8 {
    m.read_obj(GuestAddress(STATUS)).unwrap()
}

/// Runs one chain through a fresh queue; returns (used len, status byte).
fn run_one(
    mem: &GuestMem,
    f: &tempfile::NamedTempFile,
    read_only: bool,
    descs: &[virtio_queue::desc::RawDescriptor],
) -> (u32, u8) {
    let m = mem.memory();
    let vq = MockSplitQueue::new(&*m, 256);
    push_chain(&vq, descs, 0);
    let mut h = handler(mem, vq.create_queue().unwrap(), f, read_only);
    assert_eq!(h.process_queue().unwrap(), 1);
    let u = used(&vq);
    assert_eq!(u.len(), 1);
    (u[0].1, status(&m))
}

#[test]
fn identity_and_config() {
    let f = image();
    let blk = Block::new(&config(&f, false)).unwrap();
    assert_eq!(blk.device_type(), TYPE_BLOCK);
    assert_eq!(blk.capacity_sectors(), IMAGE_SECTORS);
    let feat = blk.device_features();
    assert_ne!(feat & VIRTIO_F_VERSION_1, 0);
    assert_ne!(feat & (1 << 9), 0, "FLUSH");
    assert_ne!(feat & (1 << 2), 0, "SEG_MAX");
    assert_eq!(feat & (1 << 5), 0, "RO");
    let mut cap = [0u8; 8];
    blk.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), IMAGE_SECTORS);
    let mut seg = [0u8; 4];
    blk.read_config(12, &mut seg);
    assert_eq!(u32::from_le_bytes(seg), 128);
    let ro = Block::new(&config(&f, true)).unwrap();
    assert_ne!(ro.device_features() & (1 << 5), 0);
}

#[test]
fn missing_image_is_an_error() {
    let cfg = BlockConfig {
        path: "/nonexistent/ward.img".into(),
        read_only: true,
        id: String::new(),
    };
    let err = Block::new(&cfg).err().unwrap();
    assert!(err.to_string().contains("/nonexistent/ward.img"), "{err}");
}

#[test]
fn read_into_two_buffers() {
    let (f, mem) = (image(), guest_mem());
    let m = mem.memory();
    put_header(&m, VIRTIO_BLK_T_IN, 2);
    let (len, st) = run_one(
        &mem,
        &f,
        false,
        &[rd(HDR, 16), wr(DATA, 512), wr(DATA2, 512), wr(STATUS, 1)],
    );
    assert_eq!((len, st), (1025, VIRTIO_BLK_S_OK));
    let mut got = [0u8; 512];
    m.read_slice(&mut got, GuestAddress(DATA2)).unwrap();
    let want: Vec<u8> = (3 * 512..4 * 512).map(|i| (i % 251) as u8).collect();
    assert_eq!(&got[..], &want[..]);
}

#[test]
fn write_then_flush() {
    let (f, mem) = (image(), guest_mem());
    let m = mem.memory();
    m.write_slice(&[0xabu8; 1024], GuestAddress(DATA)).unwrap();
    put_header(&m, VIRTIO_BLK_T_OUT, IMAGE_SECTORS - 2);
    let (len, st) = run_one(
        &mem,
        &f,
        false,
        &[rd(HDR, 16), rd(DATA, 1024), wr(STATUS, 1)],
    );
    assert_eq!((len, st), (1, VIRTIO_BLK_S_OK));
    let on_disk = std::fs::read(f.path()).unwrap();
    assert!(on_disk[on_disk.len() - 1024..].iter().all(|&b| b == 0xab));
    put_header(&m, VIRTIO_BLK_T_FLUSH, 0);
    let (len, st) = run_one(&mem, &f, false, &[rd(HDR, 16), wr(STATUS, 1)]);
    assert_eq!((len, st), (1, VIRTIO_BLK_S_OK));
}

#[test]
fn get_id_full_and_short() {
    let (f, mem) = (image(), guest_mem());
    let m = mem.memory();
    put_header(&m, VIRTIO_BLK_T_GET_ID, 0);
    let (len, st) = run_one(&mem, &f, false, &[rd(HDR, 16), wr(DATA, 20), wr(STATUS, 1)]);
    assert_eq!((len, st), (21, VIRTIO_BLK_S_OK));
    let mut id = [0u8; 20];
    m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..11], b"ward-disk-0");
    assert_eq!(&id[11..], &[0u8; 9]);
    put_header(&m, VIRTIO_BLK_T_GET_ID, 0);
    let (len, _) = run_one(
        &mem,
        &f,
        false,
        &[rd(HDR, 16), wr(DATA, 4), wr(DATA2, 100), wr(STATUS, 1)],
    );
    assert_eq!(len, 21);
}

#[test]
fn unsupported_type() {
    let (f, mem) = (image(), guest_mem());
    put_header(&mem.memory(), 11, 0); // DISCARD, not offered
    let (len, st) = run_one(&mem, &f, false, &[rd(HDR, 16), rd(DATA, 16), wr(STATUS, 1)]);
    assert_eq!((len, st), (1, VIRTIO_BLK_S_UNSUPP));
}

#[test]
fn read_only_refuses_writes_but_flushes() {
    let (f, mem) = (image(), guest_mem());
    let before = std::fs::read(f.path()).unwrap();
    put_header(&mem.memory(), VIRTIO_BLK_T_OUT, 0);
    let (len, st) = run_one(&mem, &f, true, &[rd(HDR, 16), rd(DATA, 512), wr(STATUS, 1)]);
    assert_eq!((len, st), (1, VIRTIO_BLK_S_IOERR));
    assert_eq!(std::fs::read(f.path()).unwrap(), before);
    put_header(&mem.memory(), VIRTIO_BLK_T_FLUSH, 0);
    let (_, st) = run_one(&mem, &f, true, &[rd(HDR, 16), wr(STATUS, 1)]);
    assert_eq!(st, VIRTIO_BLK_S_OK);
}

/// Chains with a usable status byte: answered IOERR.
#[test]
fn invalid_requests_get_ioerr() {
    let (f, mem) = (image(), guest_mem());
    let cases: Vec<(&str, u32, u64, Vec<virtio_queue::desc::RawDescriptor>)> = vec![
        (
            "header writable",
            VIRTIO_BLK_T_IN,
            0,
            vec![wr(HDR, 16), wr(DATA, 512), wr(STATUS, 1)],
        ),
        (
            "header short",
            VIRTIO_BLK_T_IN,
            0,
            vec![rd(HDR, 8), wr(DATA, 512), wr(STATUS, 1)],
        ),
        (
            "read into readable",
            VIRTIO_BLK_T_IN,
            0,
            vec![rd(HDR, 16), rd(DATA, 512), wr(STATUS, 1)],
        ),
        (
            "write from writable",
            VIRTIO_BLK_T_OUT,
            0,
            vec![rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)],
        ),
        (
            "id into readable",
            VIRTIO_BLK_T_GET_ID,
            0,
            vec![rd(HDR, 16), rd(DATA, 20), wr(STATUS, 1)],
        ),
        (
            "id without buffer",
            VIRTIO_BLK_T_GET_ID,
            0,
            vec![rd(HDR, 16), wr(STATUS, 1)],
        ),
        (
            "sector past end",
            VIRTIO_BLK_T_IN,
            IMAGE_SECTORS,
            vec![rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)],
        ),
        (
            "straddles end",
            VIRTIO_BLK_T_IN,
            IMAGE_SECTORS - 1,
            vec![rd(HDR, 16), wr(DATA, 1024), wr(STATUS, 1)],
        ),
        (
            "sector overflows",
            VIRTIO_BLK_T_OUT,
            u64::MAX,
            vec![rd(HDR, 16), rd(DATA, 512), wr(STATUS, 1)],
        ),
        (
            "partial sector",
            VIRTIO_BLK_T_IN,
            0,
            vec![rd(HDR, 16), wr(DATA, 100), wr(STATUS, 1)],
        ),
        (
            "flush with data",
            VIRTIO_BLK_T_FLUSH,
            0,
            vec![rd(HDR, 16), rd(DATA, 512), wr(STATUS, 1)],
        ),
    ];
    for (what, kind, sector, descs) in cases {
        put_header(&mem.memory(), kind, sector);
        let (len, st) = run_one(&mem, &f, false, &descs);
        assert_eq!((len, st), (1, VIRTIO_BLK_S_IOERR), "{what}");
    }
}

/// Chains without a usable status byte: returned with nothing written.
#[test]
fn unanswerable_chains_are_returned_empty() {
    let (f, mem) = (image(), guest_mem());
    let big = (MEM_SIZE as u64) - 256;
    let cases: Vec<(&str, Vec<virtio_queue::desc::RawDescriptor>)> = vec![
        (
            "status readable",
            vec![rd(HDR, 16), wr(DATA, 512), rd(STATUS, 1)],
        ),
        (
            "status empty",
            vec![rd(HDR, 16), wr(DATA, 512), wr(STATUS, 0)],
        ),
        ("single descriptor", vec![rd(HDR, 16)]),
        (
            "data outside memory",
            vec![rd(HDR, 16), wr(big, 512), wr(STATUS, 1)],
        ),
        (
            "address overflows",
            vec![rd(HDR, 16), wr(u64::MAX - 100, 512), wr(STATUS, 1)],
        ),
        (
            "status outside memory",
            vec![rd(HDR, 16), wr(DATA, 512), wr(1 << 40, 1)],
        ),
    ];
    for (what, descs) in cases {
        put_header(&mem.memory(), VIRTIO_BLK_T_IN, 0);
        let (len, st) = run_one(&mem, &f, false, &descs);
        assert_eq!(len, 0, "{what}");
        assert_eq!(st, 0xff, "{what}: status written");
    }
}

#[test]
fn too_many_segments_and_loops_are_returned_empty() {
    let (f, mem) = (image(), guest_mem());
    let m = mem.memory();
    put_header(&m, VIRTIO_BLK_T_IN, 0);
    let vq = MockSplitQueue::new(&*m, 256);
    // 131 descriptors: over seg_max + 2.
    let mut long = vec![rd(HDR, 16)];
    long.extend((0..129).map(|i| wr(DATA + i * 512, 512)));
    long.push(wr(STATUS, 1));
    push_chain(&vq, &long, 0);
    // A loop through indexes 200 -> 201 -> 200.
    push_raw(
        &vq,
        &[
            (200, raw(HDR, 16, N, 201)),
            (201, raw(DATA, 512, W | N, 200)),
        ],
        200,
    );
    // A self-referencing single descriptor.
    push_raw(&vq, &[(210, raw(HDR, 16, N, 210))], 210);
    let mut h = handler(&mem, vq.create_queue().unwrap(), &f, false);
    assert_eq!(h.process_queue().unwrap(), 3);
    assert_eq!(used(&vq), vec![(0, 0), (200, 0), (210, 0)]);
    assert_eq!(status(&m), 0xff);
}

#[test]
fn parse_bounds_the_total_length() {
    let mem = guest_mem();
    let m = mem.memory();
    put_header(&m, VIRTIO_BLK_T_IN, 0);
    let vq = MockSplitQueue::new(&*m, 16);
    let chain = vq
        .build_desc_chain(&[
            rd(HDR, 16),
            wr(DATA, 0x1000),
            wr(DATA2, 0x1000),
            wr(STATUS, 1),
        ])
        .unwrap();
    let small = Limits {
        capacity_sectors: 1 << 20,
        max_segments: 8,
        max_data_len: 0x1000,
    };
    let err = parse(chain, &*m, &small).unwrap_err();
    assert_eq!(
        err.error,
        RequestError::DataTooLong {
            len: 0x2000,
            max: 0x1000
        }
    );
    assert_eq!(err.status, Some(GuestAddress(STATUS)));
}

#[test]
fn worker_serves_a_kick() {
    let (f, mem) = (image(), guest_mem());
    let m = mem.memory();
    let vq = MockSplitQueue::new(&*m, 256);
    let q: Queue = vq.create_queue().unwrap();
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut blk = Block::new(&config(&f, false)).unwrap();
    let irq = Arc::new(MockInterrupt::default());
    blk.activate(
        mem.clone(),
        irq.clone(),
        vec![(q, kick.try_clone().unwrap())],
    )
    .unwrap();
    put_header(&m, VIRTIO_BLK_T_IN, 0);
    push_chain(&vq, &[rd(HDR, 16), wr(DATA, 512), wr(STATUS, 1)], 0);
    kick.write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while used(&vq).is_empty() {
        assert!(Instant::now() < deadline, "block worker did not answer");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(used(&vq), vec![(0, 513)]);
    assert_eq!(status(&m), VIRTIO_BLK_S_OK);
    assert!(irq.count() >= 1);
    assert!(blk.reset());
}
