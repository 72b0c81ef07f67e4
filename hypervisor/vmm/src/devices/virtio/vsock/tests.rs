use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::VsockHandler;
use super::packet::*;
use super::*;
use crate::devices::virtio::test_util::*;
use crate::devices::virtio::worker::{self, EventHandler, Poller};
use crate::devices::virtio::{GuestMem, VirtioDevice, TYPE_VSOCK};

const CID: u64 = 3;
const RXQ: u64 = 0x0;
const TXQ: u64 = 0x4000;
const EVQ: u64 = 0x8000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x20_0000;
const QSIZE: u16 = 64;

fn tx_header(op: u16, src_port: u32, dst_port: u32, len: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

fn decode(b: &[u8; HEADER_LEN]) -> Header {
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    Header {
        src_cid: u64_at(0),
        dst_cid: u64_at(8),
        src_port: u32_at(16),
        dst_port: u32_at(20),
        len: u32_at(24),
        type_: u16_at(28),
        op: u16_at(30),
        flags: u32_at(32),
        buf_alloc: u32_at(36),
        fwd_cnt: u32_at(40),
    }
}

/// A guest with three mock queues, driving a VsockHandler step by step.
struct Guest<'m> {
    m: &'m GuestMemoryMmap,
    rx: MockSplitQueue<'m, GuestMemoryMmap>,
    tx: MockSplitQueue<'m, GuestMemoryMmap>,
    kicks: [EventFd; 3],
    next_rx_desc: u16,
    next_tx_desc: u16,
    rx_seen: usize,
    tx_slot: u64,
}

struct Host {
    _dir: tempfile::TempDir,
    uds: PathBuf,
    handler: VsockHandler,
    poller: Poller,
}

fn setup(mem: &GuestMem) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&uds).unwrap();
    listener.set_nonblocking(true).unwrap();
    let m = mem.memory();
    let mk = |base| -> Queue {
        MockSplitQueue::create(&*m, GuestAddress(base), QSIZE)
            .create_queue()
            .unwrap()
    };
    let queues = [mk(RXQ), mk(TXQ), mk(EVQ)];
    let evts = [0, 1, 2].map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let mut handler = VsockHandler::new(
        mem.clone(),
        Arc::new(MockInterrupt::default()),
        queues,
        evts,
        CID,
        uds.clone(),
        listener,
    );
    let poller = Poller::new().unwrap();
    handler.register(&poller).unwrap();
    Host {
        _dir: dir,
        uds,
        handler,
        poller,
    }
}

impl<'m> Guest<'m> {
    fn new(m: &'m GuestMemoryMmap, host: &Host) -> Self {
        let kicks = [0, 1, 2].map(|i| host_evt(host, i));
        Self {
            m,
            rx: MockSplitQueue::create(m, GuestAddress(RXQ), QSIZE),
            tx: MockSplitQueue::create(m, GuestAddress(TXQ), QSIZE),
            kicks,
            next_rx_desc: 0,
            next_tx_desc: 0,
            rx_seen: 0,
            tx_slot: 0,
        }
    }

    /// Offers `n` rx buffers (header + 4 KiB data descriptors) and kicks the rx queue.
    fn add_rx_buffers(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.next_rx_desc;
            let base = RX_BUFS + u64::from(i) * 0x2000;
            push_chain(
                &self.rx,
                &[wr(base, HEADER_LEN as u32), wr(base + 0x100, 4096)],
                i,
            );
            self.next_rx_desc += 2;
        }
        self.kicks[0].write(1).unwrap();
    }

    /// Sends one packet on the tx queue and kicks it.
    fn send(&mut self, hdr: &Header, data: &[u8]) {
        let base = TX_BUFS + self.tx_slot * 0x1_0000;
        self.tx_slot += 1;
        self.m
            .write_slice(&hdr.to_bytes(), GuestAddress(base))
            .unwrap();
        self.m
            .write_slice(data, GuestAddress(base + 0x100))
            .unwrap();
        let i = self.next_tx_desc;
        if data.is_empty() {
            push_chain(&self.tx, &[rd(base, HEADER_LEN as u32)], i);
            self.next_tx_desc += 1;
        } else {
            push_chain(
                &self.tx,
                &[
                    rd(base, HEADER_LEN as u32),
                    rd(base + 0x100, data.len() as u32),
                ],
                i,
            );
            self.next_tx_desc += 2;
        }
        self.kicks[1].write(1).unwrap();
    }

    /// Packets the device put in the rx queue since the last call.
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let u = used(&self.rx);
        let new = u[self.rx_seen..].to_vec();
        self.rx_seen = u.len();
        new.into_iter()
            .map(|(id, len)| {
                let base = RX_BUFS + u64::from(id) * 0x2000;
                let mut h = [0u8; HEADER_LEN];
                self.m.read_slice(&mut h, GuestAddress(base)).unwrap();
                let hdr = decode(&h);
                assert_eq!(len as usize, HEADER_LEN + hdr.len as usize);
                let mut data = vec![0u8; hdr.len as usize];
                self.m
                    .read_slice(&mut data, GuestAddress(base + 0x100))
                    .unwrap();
                (hdr, data)
            })
            .collect()
    }
}

fn host_evt(host: &Host, _i: usize) -> EventFd {
    // The handler owns the queue EventFds; tests kick through clones taken at setup.
    host.handler_evt(_i)
}

impl Host {
    fn handler_evt(&self, i: usize) -> EventFd {
        self.handler.evt(i).try_clone().unwrap()
    }

    fn pump(&mut self) {
        for _ in 0..8 {
            worker::step(&self.poller, &mut self.handler, 20).unwrap();
        }
    }

    /// Steps until `cond` holds on the guest's rx output, or fails after 5 s.
    fn until(&mut self, guest: &mut Guest<'_>, what: &str, n: usize) -> Vec<(Header, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {got:?}"
            );
            worker::step(&self.poller, &mut self.handler, 20).unwrap();
            got.extend(guest.received());
        }
        got
    }
}

fn read_line(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn device_identity() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Vsock::new(7, &dir.path().join("v.sock")).unwrap();
    assert_eq!(dev.device_type(), TYPE_VSOCK);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    let mut cid = [0u8; 8];
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 7);
    assert!(Vsock::new(2, &dir.path().join("w.sock")).is_err());
    // A stale socket is replaced, a regular file is not.
    drop(dev);
    Vsock::new(7, &dir.path().join("v.sock")).unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    assert!(Vsock::new(7, &dir.path().join("f")).is_err());
}

#[test]
fn handshake_parsing() {
    assert_eq!(parse_connect(b"CONNECT 1234"), Ok(1234));
    assert_eq!(parse_connect(b"CONNECT 52 \r"), Ok(52));
    for bad in [
        &b"connect 1"[..],
        b"CONNECT",
        b"CONNECT x",
        b"CONNECT 1 2",
        b"CONNECT 99999999999",
        b"\xff",
    ] {
        assert!(parse_connect(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn host_connects_to_guest_and_data_flows_both_ways() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(8);

    let mut client = UnixStream::connect(&host.uds).unwrap();
    client.write_all(b"CONNECT 5000\n").unwrap();
    let got = host.until(&mut guest, "OP_REQUEST", 1);
    let req = got[0].0;
    assert_eq!(
        (req.op, req.src_cid, req.dst_cid, req.dst_port, req.src_port),
        (OP_REQUEST, 2, CID, 5000, 1024)
    );
    assert_eq!(req.type_, TYPE_STREAM);
    assert_eq!(req.buf_alloc, CONN_BUF_ALLOC);

    guest.send(&tx_header(OP_RESPONSE, 5000, 1024, 0), &[]);
    host.pump();
    assert_eq!(read_line(&mut client), "OK 1024");

    client.write_all(b"hello guest").unwrap();
    let got = host.until(&mut guest, "RW from host", 1);
    assert_eq!(got[0].0.op, OP_RW);
    assert_eq!(got[0].1, b"hello guest");

    guest.send(&tx_header(OP_RW, 5000, 1024, 10), b"hello host");
    host.pump();
    assert_eq!(read_n(&mut client, 10), b"hello host");

    // The guest closes: the host client reads EOF and the guest gets its RST.
    let mut shut = tx_header(OP_SHUTDOWN, 5000, 1024, 0);
    shut.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    guest.send(&shut, &[]);
    let got = host.until(&mut guest, "RST after shutdown", 1);
    assert_eq!(got[0].0.op, OP_RST);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(host.handler.connection_count(), 0);
}

#[test]
fn second_host_connection_gets_the_next_port() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(4);
    let mut a = UnixStream::connect(&host.uds).unwrap();
    a.write_all(b"CONNECT 7\n").unwrap();
    host.until(&mut guest, "first request", 1);
    let mut b = UnixStream::connect(&host.uds).unwrap();
    b.write_all(b"CONNECT 7\n").unwrap();
    let got = host.until(&mut guest, "second request", 1);
    assert_eq!(got[0].0.src_port, 1025);
}

#[test]
fn guest_refusal_closes_the_client() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(4);
    let mut client = UnixStream::connect(&host.uds).unwrap();
    client.write_all(b"CONNECT 6000\n").unwrap();
    host.until(&mut guest, "OP_REQUEST", 1);
    guest.send(&tx_header(OP_RST, 6000, 1024, 0), &[]);
    host.pump();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(client.read_to_end(&mut buf).unwrap(), 0);
}

#[test]
fn malformed_handshake_closes_the_client() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(2);
    let mut client = UnixStream::connect(&host.uds).unwrap();
    client.write_all(&[b'A'; 100]).unwrap();
    host.pump();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    // Closed with our bytes unread, the socket reports a reset rather than EOF.
    match client.read_to_end(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("client still open: {other:?}"),
    }
    assert!(guest.received().is_empty());
}

#[test]
fn guest_connects_to_a_host_listener() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(8);
    let service = UnixListener::bind(format!("{}_5001", host.uds.display())).unwrap();

    guest.send(&tx_header(OP_REQUEST, 3000, 5001, 0), &[]);
    let got = host.until(&mut guest, "OP_RESPONSE", 1);
    let resp = got[0].0;
    assert_eq!(
        (resp.op, resp.src_port, resp.dst_port, resp.dst_cid),
        (OP_RESPONSE, 5001, 3000, CID)
    );
    let (mut conn, _) = service.accept().unwrap();

    guest.send(&tx_header(OP_RW, 3000, 5001, 4), b"ping");
    host.pump();
    assert_eq!(read_n(&mut conn, 4), b"ping");

    conn.write_all(b"pong").unwrap();
    let got = host.until(&mut guest, "RW from service", 1);
    assert_eq!((got[0].0.op, got[0].1.as_slice()), (OP_RW, &b"pong"[..]));

    // The service hangs up: the guest hears that the host will send and receive no more.
    drop(conn);
    let got = host.until(&mut guest, "SHUTDOWN", 1);
    assert_eq!(got[0].0.op, OP_SHUTDOWN);
    assert_ne!(got[0].0.flags & SHUTDOWN_SEND, 0);
    guest.send(&tx_header(OP_RST, 3000, 5001, 0), &[]);
    host.pump();
    assert_eq!(host.handler.connection_count(), 0);
}

#[test]
fn guest_connect_without_listener_is_reset() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(2);
    guest.send(&tx_header(OP_REQUEST, 3000, 4444, 0), &[]);
    let got = host.until(&mut guest, "RST", 1);
    assert_eq!(
        (got[0].0.op, got[0].0.dst_port, got[0].0.src_port),
        (OP_RST, 3000, 4444)
    );
    // Data for a connection that does not exist is answered with RST too.
    guest.send(&tx_header(OP_RW, 3001, 4444, 3), b"abc");
    let got = host.until(&mut guest, "RST", 1);
    assert_eq!(got[0].0.op, OP_RST);
}

#[test]
fn host_data_respects_guest_credit() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(8);
    let service = UnixListener::bind(format!("{}_5002", host.uds.display())).unwrap();
    let mut req = tx_header(OP_REQUEST, 3000, 5002, 0);
    req.buf_alloc = 4;
    guest.send(&req, &[]);
    host.until(&mut guest, "OP_RESPONSE", 1);
    let (mut conn, _) = service.accept().unwrap();
    conn.write_all(b"0123456789").unwrap();
    let got = host.until(&mut guest, "4 bytes then a credit request", 2);
    assert_eq!((got[0].0.op, got[0].1.as_slice()), (OP_RW, &b"0123"[..]));
    assert_eq!(got[1].0.op, OP_CREDIT_REQUEST);
    host.pump();
    assert!(guest.received().is_empty(), "sent past the guest's credit");
    let mut upd = tx_header(OP_CREDIT_UPDATE, 3000, 5002, 0);
    upd.buf_alloc = 4;
    upd.fwd_cnt = 4;
    guest.send(&upd, &[]);
    let got = host.until(&mut guest, "4 more bytes", 1);
    assert_eq!(got[0].1, b"4567");
}

#[test]
fn guest_exceeding_its_credit_is_reset() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(8);
    // A listener that never reads: its socket buffer fills, then ours.
    let service = UnixListener::bind(format!("{}_5003", host.uds.display())).unwrap();
    guest.send(&tx_header(OP_REQUEST, 3000, 5003, 0), &[]);
    host.until(&mut guest, "OP_RESPONSE", 1);
    let (_conn, _) = service.accept().unwrap();
    let chunk = vec![7u8; 60 * 1024];
    let mut reset = false;
    for _ in 0..40 {
        guest.send(&tx_header(OP_RW, 3000, 5003, chunk.len() as u32), &chunk);
        host.pump();
        if guest.received().iter().any(|(h, _)| h.op == OP_RST) {
            reset = true;
            break;
        }
    }
    assert!(
        reset,
        "the device kept buffering past the credit it advertised"
    );
    assert_eq!(host.handler.connection_count(), 0);
}

#[test]
fn invalid_tx_packets_are_dropped() {
    let mem = guest_mem();
    let m = mem.memory();
    let mut host = setup(&mem);
    let mut guest = Guest::new(&m, &host);
    guest.add_rx_buffers(4);
    let mut spoofed = tx_header(OP_REQUEST, 3000, 4444, 0);
    spoofed.src_cid = 99;
    guest.send(&spoofed, &[]);
    let mut elsewhere = tx_header(OP_REQUEST, 3000, 4444, 0);
    elsewhere.dst_cid = 5;
    guest.send(&elsewhere, &[]);
    let mut dgram = tx_header(OP_REQUEST, 3000, 4444, 0);
    dgram.type_ = 2;
    guest.send(&dgram, &[]);
    guest.send(&tx_header(99, 3000, 4444, 0), &[]);
    // len larger than the data descriptor.
    guest.send(&tx_header(OP_RW, 3000, 4444, 100), &[1, 2, 3]);
    host.pump();
    assert_eq!(used(&guest.tx).len(), 5);
    assert!(used(&guest.tx).iter().all(|&(_, len)| len == 0));
    assert!(guest.received().is_empty(), "answered an invalid packet");
}

/// Builds a tx chain from raw descriptors and runs parse_tx on it.
fn parse_raw(
    m: &GuestMemoryMmap,
    descs: &[virtio_queue::desc::RawDescriptor],
) -> Result<Header, PacketError> {
    let vq = MockSplitQueue::new(m, 16);
    let mut chain = vq.build_desc_chain(descs).unwrap();
    parse_tx(m, &mut chain, CID).map(|p| p.hdr)
}

#[test]
fn parse_tx_rejects_malformed_chains() {
    let mem = guest_mem();
    let m = mem.memory();
    let hdr = tx_header(OP_RW, 1, 2, 8);
    m.write_slice(&hdr.to_bytes(), GuestAddress(0x1000))
        .unwrap();
    assert!(parse_raw(&m, &[rd(0x1000, 44), rd(0x2000, 8)]).is_ok());
    // header and data in one descriptor (Linux 6.2+)
    assert!(parse_raw(&m, &[rd(0x1000, 52)]).is_ok());
    let cases: Vec<(&str, Vec<virtio_queue::desc::RawDescriptor>)> = vec![
        ("header too short", vec![rd(0x1000, 20), rd(0x2000, 8)]),
        ("header writable", vec![wr(0x1000, 44), rd(0x2000, 8)]),
        ("data writable", vec![rd(0x1000, 44), wr(0x2000, 8)]),
        ("data shorter than len", vec![rd(0x1000, 44), rd(0x2000, 4)]),
        ("no data descriptor", vec![rd(0x1000, 44)]),
        ("header outside memory", vec![rd(MEM_SIZE as u64 - 10, 44)]),
        (
            "data outside memory",
            vec![rd(0x1000, 44), rd(MEM_SIZE as u64 - 4, 8)],
        ),
        ("address overflows", vec![rd(u64::MAX - 8, 44)]),
    ];
    for (what, descs) in cases {
        assert!(parse_raw(&m, &descs).is_err(), "{what}");
    }
    let mut huge = tx_header(OP_RW, 1, 2, MAX_PKT_DATA + 1);
    huge.len = MAX_PKT_DATA + 1;
    m.write_slice(&huge.to_bytes(), GuestAddress(0x1000))
        .unwrap();
    assert!(parse_raw(&m, &[rd(0x1000, 44), rd(0x2000, MAX_PKT_DATA + 1)]).is_err());
    let empty_rw = tx_header(OP_RW, 1, 2, 0);
    m.write_slice(&empty_rw.to_bytes(), GuestAddress(0x1000))
        .unwrap();
    assert!(matches!(
        parse_raw(&m, &[rd(0x1000, 44)]),
        Err(PacketError::EmptyRw)
    ));
}

#[test]
fn worker_thread_answers_a_connect() {
    let mem = guest_mem();
    let m = mem.memory();
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mut dev = Vsock::new(CID, &uds).unwrap();
    let mk = |base| -> Queue {
        MockSplitQueue::create(&*m, GuestAddress(base), QSIZE)
            .create_queue()
            .unwrap()
    };
    let kicks = [0, 1, 2].map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let queues = vec![
        (mk(RXQ), kicks[0].try_clone().unwrap()),
        (mk(TXQ), kicks[1].try_clone().unwrap()),
        (mk(EVQ), kicks[2].try_clone().unwrap()),
    ];
    dev.activate(mem.clone(), Arc::new(MockInterrupt::default()), queues)
        .unwrap();
    let rx = MockSplitQueue::create(&*m, GuestAddress(RXQ), QSIZE);
    push_chain(&rx, &[wr(RX_BUFS, 44), wr(RX_BUFS + 0x100, 4096)], 0);
    kicks[0].write(1).unwrap();
    let mut client = UnixStream::connect(&uds).unwrap();
    client.write_all(b"CONNECT 80\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while used(&rx).is_empty() {
        assert!(
            Instant::now() < deadline,
            "vsock worker did not forward the CONNECT"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(dev.reset());
    // Reset closed the pending connection.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(client.read_to_end(&mut buf).unwrap(), 0);
}
