use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::{NetHandler, RxPass};
use super::frame::{ETH_HLEN, HDR_LEN};
use super::tap::{IfReq, IFF_NO_PI, IFF_TAP, IFF_TUN, IFF_VNET_HDR};
use super::*;
use crate::devices::virtio::test_util::*;
use crate::devices::virtio::{GuestMem, VirtioDevice, TYPE_NET, VIRTIO_F_VERSION_1};

const W: u16 = VRING_DESC_F_WRITE as u16;
const N: u16 = VRING_DESC_F_NEXT as u16;

const RXQ: u64 = 0x0;
const TXQ: u64 = 0x4000;
const QSIZE: u16 = 64;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x20_0000;
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// A local experimental ethertype: nothing else in the test's namespace sends it.
const ETH_TEST: u16 = 0x88b5;

// ---- a tap in a private network namespace --------------------------------------------

/// `_IOW('T', 202, int)`
const TUNSETIFF: u64 = 0x4004_54ca;
const SIOCGIFFLAGS: u64 = 0x8913;
const SIOCSIFFLAGS: u64 = 0x8914;
const SIOCSIFMTU: u64 = 0x8922;
const SIOCGIFINDEX: u64 = 0x8933;
/// Below IPv6's minimum MTU (1280) the kernel gives the interface no IPv6, so it sends no
/// router solicitations or MLD reports that would mix with the test's frames.
const TEST_MTU: i32 = 1000;

/// `struct ifreq` with an int in the union (ifindex, mtu).
#[repr(C)]
#[derive(Default)]
struct IfReqInt {
    name: [u8; libc::IFNAMSIZ],
    value: i32,
    pad: [u8; 20],
}

fn ifname(s: &str) -> [u8; libc::IFNAMSIZ] {
    let mut name = [0u8; libc::IFNAMSIZ];
    name[..s.len()].copy_from_slice(s.as_bytes());
    name
}

/// Opens /dev/net/tun and attaches a new interface `wtap%d` with `flags`.
pub(crate) fn create_tun(flags: i16) -> (File, String) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| {
            panic!(
                "cannot open /dev/net/tun ({e}): the virtio-net tests need the tun driver \
                 (modprobe tun) and root"
            )
        });
    let mut req = IfReq {
        name: ifname("wtap%d"),
        flags,
        ..Default::default()
    };
    // SAFETY: TUNSETIFF reads and writes one struct ifreq; IfReq has its layout and size.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", io::Error::last_os_error());
    let end = req.name.iter().position(|&b| b == 0).unwrap();
    (file, String::from_utf8(req.name[..end].to_vec()).unwrap())
}

fn socket(domain: i32, kind: i32, proto: i32) -> OwnedFd {
    // SAFETY: socket passes no memory; the result is checked before it is owned.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, proto) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn ioctl_ifreq<T>(fd: &OwnedFd, request: u64, req: &mut T) {
    // SAFETY: every request used here reads or writes one struct ifreq; T is one of the
    // 40-byte repr(C) layouts above.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, req as *mut T) };
    assert_eq!(rc, 0, "ioctl {request:#x}: {}", io::Error::last_os_error());
}

/// A tap, up, and a packet socket on it that sends and receives [`ETH_TEST`] frames: the
/// other end of the wire.
struct NsTap {
    /// The tap's queue, as ward-vmm's parent would pass it.
    tun: File,
    pkt: OwnedFd,
}

impl NsTap {
    fn new() -> Self {
        let (tun, name) = create_tun(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        let inet = socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let mut mtu = IfReqInt {
            name: ifname(&name),
            value: TEST_MTU,
            ..Default::default()
        };
        ioctl_ifreq(&inet, SIOCSIFMTU, &mut mtu);
        let mut flags = IfReq {
            name: ifname(&name),
            ..Default::default()
        };
        ioctl_ifreq(&inet, SIOCGIFFLAGS, &mut flags);
        flags.flags |= (libc::IFF_UP | libc::IFF_NOARP) as i16;
        ioctl_ifreq(&inet, SIOCSIFFLAGS, &mut flags);
        let mut index = IfReqInt {
            name: ifname(&name),
            ..Default::default()
        };
        ioctl_ifreq(&inet, SIOCGIFINDEX, &mut index);

        let proto = ETH_TEST.to_be();
        let pkt = socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index.value;
        // SAFETY: addr is a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                pkt.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO reads one timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                pkt.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(rc, 0);
        NsTap { tun, pkt }
    }

    fn tap(&self) -> Arc<Tap> {
        Arc::new(Tap::open(self.tun.as_raw_fd()).expect("Tap::open"))
    }

    /// Sends `frame` out of the interface: the tap's reader (the device) gets it.
    fn send(&self, frame: &[u8]) {
        // SAFETY: frame is a live buffer of the length given.
        let n = unsafe { libc::send(self.pkt.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            io::Error::last_os_error()
        );
    }

    /// The next frame the interface received (what the device wrote to the tap).
    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 70000];
        loop {
            // SAFETY: an all-zero sockaddr_ll is valid for recvfrom to fill.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and from are live buffers of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.pkt.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut len,
                )
            };
            assert!(
                n >= 0,
                "no frame came out of the tap: {}",
                io::Error::last_os_error()
            );
            // Our own sends are looped back to packet sockets as outgoing: not wanted here.
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return buf[..n as usize].to_vec();
            }
        }
    }

    /// Nothing more arrives within `ms`.
    fn quiet(&self, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: self.pkt.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 0 }
    }
}

/// Runs `f` on a thread of its own in a new, empty network namespace, so that its tap and
/// traffic never touch the host's.
pub(crate) fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare passes no memory; CLONE_NEWNET moves only this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (the virtio-net tests run as root)",
            io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A broadcast frame of ethertype [`ETH_TEST`] whose payload starts with `tag`.
fn test_frame(tag: u8, payload_len: usize) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&ETH_TEST.to_be_bytes());
    f.extend((0..payload_len).map(|i| tag.wrapping_add(i as u8)));
    f
}

fn handler(mem: &GuestMem, tap: Arc<Tap>, irq: Arc<MockInterrupt>) -> NetHandler {
    let m = mem.memory();
    let mk = |base| -> Queue {
        MockSplitQueue::create(&*m, GuestAddress(base), QSIZE)
            .create_queue()
            .unwrap()
    };
    let evt = || EventFd::new(libc::EFD_NONBLOCK).unwrap();
    NetHandler::new(mem.clone(), irq, tap, (mk(RXQ), evt()), (mk(TXQ), evt()))
}

fn read_guest(m: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    m.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

/// Processes the receive side until `n` chains are used (packets take a moment to cross
/// the interface after `send`).
fn rx_until_used<M: vm_memory::GuestMemory>(
    h: &mut NetHandler,
    vq: &MockSplitQueue<'_, M>,
    n: usize,
) -> RxPass {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pass = h.process_rx().unwrap();
        if used(vq).len() >= n {
            return pass;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} rx chains used",
            used(vq).len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn expected_rx(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; HDR_LEN];
    v[10] = 1; // num_buffers
    v.extend_from_slice(frame);
    v
}

// ---- the device ------------------------------------------------------------------------

#[test]
fn identity_and_config_space() {
    in_private_netns(|| {
        let ns = NsTap::new();
        let net = Net::new(ns.tap(), [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0], Some(1400));
        assert_eq!(net.device_type(), TYPE_NET);
        assert_eq!(net.queue_max_sizes(), &[256, 256]);
        let f = net.device_features();
        assert_eq!(f, VIRTIO_F_VERSION_1 | 1 << 5 | 1 << 16 | 1 << 3);
        let mut cfg = [0u8; 12];
        net.read_config(0, &mut cfg);
        assert_eq!(
            cfg,
            [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 1, 0, 1, 0, 0x78, 0x05]
        );
        let mut status = [0u8; 2];
        net.read_config(6, &mut status);
        assert_eq!(status, [1, 0], "link up");
        let net = Net::new(ns.tap(), MAC, None);
        assert_eq!(
            net.device_features() & (1 << 3),
            0,
            "no MTU feature without mtu"
        );
    });
}

#[test]
fn tap_open_checks_the_descriptor() {
    in_private_netns(|| {
        let ns = NsTap::new();
        let tap = ns.tap();
        assert!(tap.name().starts_with("wtap"), "{}", tap.name());
        // The inherited descriptor is made non-blocking.
        // SAFETY: F_GETFL passes no memory.
        let fl = unsafe { libc::fcntl(ns.tun.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(fl & libc::O_NONBLOCK, 0);

        let file = tempfile::tempfile().unwrap();
        let e = Tap::open(file.as_raw_fd()).unwrap_err();
        assert!(matches!(e, NetError::NotTap { .. }), "{e}");
        let e = Tap::open(1 << 20).unwrap_err();
        assert!(matches!(e, NetError::NotOpen { .. }), "{e}");
        let (tun, _) = create_tun(IFF_TUN | IFF_NO_PI | IFF_VNET_HDR);
        let e = Tap::open(tun.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("IFF_TAP"), "{e}");
        let (no_hdr, _) = create_tun(IFF_TAP | IFF_NO_PI);
        let e = Tap::open(no_hdr.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("IFF_VNET_HDR"), "{e}");
        // Not yet attached to an interface.
        let bare = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap();
        assert!(matches!(
            Tap::open(bare.as_raw_fd()),
            Err(NetError::NotTap { .. })
        ));
    });
}

#[test]
fn tx_frames_come_out_of_the_tap() {
    in_private_netns(|| {
        let ns = NsTap::new();
        let mem = guest_mem();
        let m = mem.memory();
        let irq = Arc::new(MockInterrupt::default());
        let mut h = handler(&mem, ns.tap(), irq.clone());
        let vq = MockSplitQueue::create(&*m, GuestAddress(TXQ), QSIZE);
        let f1 = test_frame(1, 100);
        let f2 = test_frame(2, 900);
        // Header in a descriptor of its own, frame in one.
        m.write_slice(&[0u8; HDR_LEN], GuestAddress(TX_BUFS))
            .unwrap();
        m.write_slice(&f1, GuestAddress(TX_BUFS + 0x100)).unwrap();
        push_chain(
            &vq,
            &[rd(TX_BUFS, 12), rd(TX_BUFS + 0x100, f1.len() as u32)],
            0,
        );
        // Header and frame in one buffer, then split in three oddly.
        let mut p2 = vec![0u8; HDR_LEN];
        p2.extend_from_slice(&f2);
        m.write_slice(&p2, GuestAddress(TX_BUFS + 0x1000)).unwrap();
        push_chain(
            &vq,
            &[
                rd(TX_BUFS + 0x1000, 5),
                rd(TX_BUFS + 0x1005, 300),
                rd(TX_BUFS + 0x1131, p2.len() as u32 - 305),
            ],
            2,
        );
        assert_eq!(h.process_tx().unwrap(), 2);
        assert_eq!(used(&vq), vec![(0, 0), (2, 0)]);
        assert_eq!(irq.count(), 1);
        assert_eq!(ns.recv(), f1);
        assert_eq!(ns.recv(), f2);
        assert_eq!(h.tx_dropped, 0);
    });
}

#[test]
fn broken_tx_chains_are_returned_and_dropped() {
    in_private_netns(|| {
        let ns = NsTap::new();
        let mem = guest_mem();
        let m = mem.memory();
        let mut h = handler(&mem, ns.tap(), Arc::new(MockInterrupt::default()));
        let vq = MockSplitQueue::create(&*m, GuestAddress(TXQ), QSIZE);
        let f = test_frame(7, 64);
        let mut p = vec![0u8; HDR_LEN];
        p.extend_from_slice(&f);
        m.write_slice(&p, GuestAddress(TX_BUFS)).unwrap();
        let plen = p.len() as u32;
        // 0: a device-writable buffer.
        push_chain(&vq, &[rd(TX_BUFS, 12), wr(TX_BUFS + 12, plen - 12)], 0);
        // 2: shorter than a header and an Ethernet header.
        push_chain(&vq, &[rd(TX_BUFS, 25)], 2);
        // 3: longer than 64 KiB + headers.
        push_chain(
            &vq,
            &[rd(TX_BUFS, 0x8000), rd(TX_BUFS, 0x8000), rd(TX_BUFS, 27)],
            3,
        );
        // 6: past the end of guest memory.
        push_chain(&vq, &[rd(MEM_SIZE as u64 - 16, 64)], 6);
        // 7: a loop 7 -> 8 -> 7.
        push_raw(
            &vq,
            &[(7, raw(TX_BUFS, 12, N, 8)), (8, raw(TX_BUFS, 30, N, 7))],
            7,
        );
        // 9: next index past the queue.
        push_raw(&vq, &[(9, raw(TX_BUFS, 40, N, 999))], 9);
        // 10: a header asking for a checksum offload that was not negotiated.
        m.write_slice(&[1u8], GuestAddress(TX_BUFS + 0x2000))
            .unwrap();
        m.write_slice(&p[1..], GuestAddress(TX_BUFS + 0x2001))
            .unwrap();
        push_chain(&vq, &[rd(TX_BUFS + 0x2000, plen)], 10);
        // 11: a good one still goes out after all that.
        push_chain(&vq, &[rd(TX_BUFS, plen)], 11);
        assert_eq!(h.process_tx().unwrap(), 8);
        assert_eq!(
            used(&vq),
            [0, 2, 3, 6, 7, 9, 10, 11].map(|i| (i, 0)).to_vec()
        );
        assert_eq!(h.tx_dropped, 7);
        assert_eq!(ns.recv(), f);
        assert!(ns.quiet(100), "a broken chain reached the tap");
    });
}

#[test]
fn rx_frames_arrive_with_a_header() {
    in_private_netns(|| {
        let ns = NsTap::new();
        let mem = guest_mem();
        let m = mem.memory();
        let irq = Arc::new(MockInterrupt::default());
        let mut h = handler(&mem, ns.tap(), irq.clone());
        let vq = MockSplitQueue::create(&*m, GuestAddress(RXQ), QSIZE);
        // One buffer; and a header-sized buffer followed by the rest.
        push_chain(&vq, &[wr(RX_BUFS, 2048)], 0);
        push_chain(
            &vq,
            &[wr(RX_BUFS + 0x1000, 12), wr(RX_BUFS + 0x2000, 1514)],
            1,
        );
        m.write_slice(&[0xee; 16], GuestAddress(RX_BUFS)).unwrap();
        let f1 = test_frame(3, 46);
        let f2 = test_frame(4, 1000);
        ns.send(&f1);
        ns.send(&f2);
        let pass = rx_until_used(&mut h, &vq, 2);
        assert!(!pass.starved);
        let l1 = (HDR_LEN + f1.len()) as u32;
        let l2 = (HDR_LEN + f2.len()) as u32;
        assert_eq!(used(&vq), vec![(0, l1), (1, l2)]);
        assert_eq!(read_guest(&m, RX_BUFS, l1 as usize), expected_rx(&f1));
        let mut got2 = read_guest(&m, RX_BUFS + 0x1000, 12);
        got2.extend(read_guest(&m, RX_BUFS + 0x2000, f2.len()));
        assert_eq!(got2, expected_rx(&f2));
        assert!(irq.count() >= 1);
        assert_eq!(h.pending, None);
    });
}

#[test]
fn without_rx_buffers_the_tap_is_left_alone() {
    in_private_netns(|| {
        let ns = NsTap::new();
        let mem = guest_mem();
        let m = mem.memory();
        let irq = Arc::new(MockInterrupt::default());
        let mut h = handler(&mem, ns.tap(), irq.clone());
        let vq = MockSplitQueue::create(&*m, GuestAddress(RXQ), QSIZE);
        let frames: Vec<Vec<u8>> = (0..3).map(|i| test_frame(10 + i, 60)).collect();
        for f in &frames {
            ns.send(f);
        }
        // Wait until the first one is read: it is the one packet held back.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pass = h.process_rx().unwrap();
            if h.pending.is_some() {
                assert_eq!(
                    pass,
                    RxPass {
                        used: 0,
                        starved: true
                    }
                );
                break;
            }
            assert!(Instant::now() < deadline, "the tap never had a packet");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Starved again: nothing more is read from the tap.
        assert_eq!(
            h.process_rx().unwrap(),
            RxPass {
                used: 0,
                starved: true
            }
        );
        assert_eq!(irq.count(), 0);
        // One buffer: the held packet goes in, the next one is held.
        push_chain(&vq, &[wr(RX_BUFS, 2048)], 0);
        let pass = h.process_rx().unwrap();
        assert_eq!(
            pass,
            RxPass {
                used: 1,
                starved: true
            }
        );
        let len = HDR_LEN + frames[0].len();
        assert_eq!(used(&vq), vec![(0, len as u32)]);
        assert_eq!(read_guest(&m, RX_BUFS, len), expected_rx(&frames[0]));
        // Two more: both remaining packets, in order, and the tap is empty.
        push_chain(&vq, &[wr(RX_BUFS + 0x1000, 2048)], 1);
        push_chain(&vq, &[wr(RX_BUFS + 0x2000, 2048)], 2);
        let pass = rx_until_used(&mut h, &vq, 3);
        assert!(!pass.starved);
        assert_eq!(
            read_guest(&m, RX_BUFS + 0x1000, len),
            expected_rx(&frames[1])
        );
        assert_eq!(
            read_guest(&m, RX_BUFS + 0x2000, len),
            expected_rx(&frames[2])
        );
        assert_eq!(h.pending, None);
    });
}

#[test]
fn broken_rx_chains_are_returned_empty() {
    in_private_netns(|| {
        let ns = NsTap::new();
        let mem = guest_mem();
        let m = mem.memory();
        let mut h = handler(&mem, ns.tap(), Arc::new(MockInterrupt::default()));
        let vq = MockSplitQueue::create(&*m, GuestAddress(RXQ), QSIZE);
        // 0: device-readable.
        push_chain(&vq, &[rd(RX_BUFS, 2048)], 0);
        // 1: too small for any packet.
        push_chain(&vq, &[wr(RX_BUFS, 25)], 1);
        // 2: past the end of guest memory.
        push_chain(&vq, &[wr(MEM_SIZE as u64 - 16, 2048)], 2);
        // 3: a loop.
        push_raw(
            &vq,
            &[
                (3, raw(RX_BUFS, 64, W | N, 4)),
                (4, raw(RX_BUFS, 64, W | N, 3)),
            ],
            3,
        );
        // 5: too small for this packet (which is then dropped).
        push_chain(&vq, &[wr(RX_BUFS, 40)], 5);
        // 6: fine, takes the second packet.
        push_chain(&vq, &[wr(RX_BUFS + 0x1000, 2048)], 6);
        let big = test_frame(20, 200);
        let small = test_frame(21, 50);
        ns.send(&big);
        ns.send(&small);
        rx_until_used(&mut h, &vq, 6);
        let len = (HDR_LEN + small.len()) as u32;
        assert_eq!(
            used(&vq),
            vec![(0, 0), (1, 0), (2, 0), (3, 0), (5, 0), (6, len)]
        );
        assert_eq!(
            read_guest(&m, RX_BUFS + 0x1000, len as usize),
            expected_rx(&small)
        );
        assert_eq!(h.rx_dropped, 1);
    });
}

#[test]
fn worker_moves_frames_both_ways_and_stops_on_reset() {
    in_private_netns(|| {
        let ns = NsTap::new();
        let mem = guest_mem();
        let m = mem.memory();
        let irq = Arc::new(MockInterrupt::default());
        let rxq = MockSplitQueue::create(&*m, GuestAddress(RXQ), QSIZE);
        let txq = MockSplitQueue::create(&*m, GuestAddress(TXQ), QSIZE);
        let kicks = [0, 1].map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut net = Net::new(ns.tap(), MAC, Some(1500));
        net.activate(
            mem.clone(),
            irq.clone(),
            vec![
                (rxq.create_queue().unwrap(), kicks[0].try_clone().unwrap()),
                (txq.create_queue().unwrap(), kicks[1].try_clone().unwrap()),
            ],
        )
        .unwrap();
        assert!(matches!(
            net.activate(mem.clone(), irq.clone(), vec![]),
            Err(crate::devices::virtio::ActivateError::AlreadyActive)
        ));
        let wait = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done() {
                assert!(Instant::now() < deadline, "the worker did not {what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // A packet before any rx buffer waits for one.
        let f1 = test_frame(30, 80);
        ns.send(&f1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(used(&rxq).is_empty());
        push_chain(&rxq, &[wr(RX_BUFS, 2048)], 0);
        kicks[0].write(1).unwrap();
        wait("receive", &|| used(&rxq).len() == 1);
        let len = HDR_LEN + f1.len();
        assert_eq!(read_guest(&m, RX_BUFS, len), expected_rx(&f1));
        // The tap is polled again: a buffer posted ahead gets the next packet at once.
        push_chain(&rxq, &[wr(RX_BUFS + 0x1000, 2048)], 1);
        kicks[0].write(1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let f2 = test_frame(31, 80);
        ns.send(&f2);
        wait("receive again", &|| used(&rxq).len() == 2);
        assert_eq!(read_guest(&m, RX_BUFS + 0x1000, len), expected_rx(&f2));
        // Transmit.
        let f3 = test_frame(32, 500);
        let mut p = vec![0u8; HDR_LEN];
        p.extend_from_slice(&f3);
        m.write_slice(&p, GuestAddress(TX_BUFS)).unwrap();
        push_chain(&txq, &[rd(TX_BUFS, p.len() as u32)], 0);
        kicks[1].write(1).unwrap();
        assert_eq!(ns.recv(), f3);
        wait("complete the transmit", &|| used(&txq).len() == 1);
        assert!(net.reset());
    });
}

// ---- frame parsing without a tap -------------------------------------------------------

#[test]
fn parse_reports_why() {
    let mem = guest_mem();
    let m = mem.memory();
    let vq = MockSplitQueue::new(&*m, 16);
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    let chain = vq
        .build_desc_chain(&[rd(0x1000, 12), wr(0x2000, 64)])
        .unwrap();
    assert_eq!(
        parse_tx(chain, &*m, &mut buf),
        Err(FrameError::WritableInTx { addr: 0x2000 })
    );
    let chain = vq
        .build_desc_chain(&[rd(0x1000, 12), rd(0x2000, 13)])
        .unwrap();
    assert_eq!(
        parse_tx(chain, &*m, &mut buf),
        Err(FrameError::TooShort { len: 25, min: 26 })
    );
    let chain = vq
        .build_desc_chain(&[rd(0x1000, 0x10000), rd(0x20000, 27)])
        .unwrap();
    assert_eq!(
        parse_tx(chain, &*m, &mut buf),
        Err(FrameError::TooLong {
            len: 65563,
            max: MAX_PACKET_LEN
        })
    );
    // The largest packet is fine.
    let chain = vq
        .build_desc_chain(&[rd(0x1000, 0x10000), rd(0x20000, 26)])
        .unwrap();
    m.write_slice(&[0u8; 12], GuestAddress(0x1000)).unwrap();
    assert_eq!(
        parse_tx(chain, &*m, &mut buf),
        Ok(TxPacket {
            len: MAX_PACKET_LEN
        })
    );
    m.write_slice(&[0, 4], GuestAddress(0x1000)).unwrap(); // gso_type TCPV6
    let chain = vq.build_desc_chain(&[rd(0x1000, 64)]).unwrap();
    assert_eq!(
        parse_tx(chain, &*m, &mut buf),
        Err(FrameError::Offload {
            flags: 0,
            gso_type: 4
        })
    );

    let chain = vq
        .build_desc_chain(&[wr(0x1000, 12), rd(0x2000, 64)])
        .unwrap();
    assert_eq!(
        parse_rx(chain, &*m),
        Err(FrameError::ReadOnlyInRx { addr: 0x2000 })
    );
    let chain = vq
        .build_desc_chain(&[wr(0x1000, 12), wr(0x2000, 13)])
        .unwrap();
    assert_eq!(
        parse_rx(chain, &*m),
        Err(FrameError::TooShort { len: 25, min: 26 })
    );
    // Oversized receive chains are fine; only MAX_PACKET_LEN of them is used.
    let chain = vq
        .build_desc_chain(&[wr(0x1000, 0x10000), wr(0x20000, 0x10000)])
        .unwrap();
    let rx = parse_rx(chain, &*m).unwrap();
    assert_eq!(rx.capacity, MAX_PACKET_LEN);
    let mut packet = vec![0xabu8; 30];
    assert_eq!(write_rx(&*m, &rx, &mut packet), Ok(30));
    let mut small = vec![0u8; HDR_LEN + ETH_HLEN - 1];
    assert!(matches!(
        write_rx(&*m, &rx, &mut small),
        Err(FrameError::TooShort { .. })
    ));
    let chain = vq.build_desc_chain(&[wr(0x1000, 40)]).unwrap();
    let rx = parse_rx(chain, &*m).unwrap();
    let mut big = vec![0u8; 41];
    assert_eq!(
        write_rx(&*m, &rx, &mut big),
        Err(FrameError::TooLong { len: 41, max: 40 })
    );
}
