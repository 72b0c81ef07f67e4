//! The connection side of the control socket: descriptors that come with request lines
//! reach the main loop only with `add_net`, and are closed in every other case.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::Value;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

/// A pipe: the read end non-blocking, so that [`all_closed`] can tell EOF from "no data".
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both are new descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Every copy of the pipe's write end is closed: a read sees end of file, not EAGAIN. This
/// holds whatever descriptor numbers other tests open and close meanwhile.
fn all_closed(read_end: &OwnedFd) -> bool {
    let mut b = [0u8; 16];
    loop {
        // SAFETY: b is a live buffer of the length given.
        let n = unsafe { libc::read(read_end.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        match n {
            0 => return true,
            n if n > 0 => continue,
            _ => return false,
        }
    }
}

/// Sends `bytes` in one sendmsg with `fds` attached.
fn send(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) {
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the fields used are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
        assert!(space <= std::mem::size_of_val(&control));
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `control`, large enough for one header and the
        // descriptors (checked above); CMSG_FIRSTHDR returns its start.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg points at live buffers of the lengths given.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "sendmsg: {}",
        io::Error::last_os_error()
    );
}

struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn new(stream: UnixStream) -> Self {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    fn send(&self, line: &str, fds: &[RawFd]) {
        send(&self.stream, line.as_bytes(), fds);
    }

    fn reply(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// The server closed the connection (a reset when it left bytes unread).
    fn assert_closed(&mut self) {
        let mut rest = String::new();
        match self.reader.read_line(&mut rest) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("the connection is still open: {other:?} {rest:?}"),
        }
    }

    /// Writes `bytes`, which the server may stop reading half-way.
    fn flood(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    fn error(&mut self) -> String {
        let r = self.reply();
        assert_eq!(r["ok"], false, "{r}");
        r["error"].as_str().unwrap_or_default().to_string()
    }
}

/// The main loop's end, played by the test.
struct Vmm {
    calls: Receiver<Call>,
}

impl Vmm {
    fn next(&self) -> Call {
        self.calls
            .recv_timeout(WAIT)
            .expect("a call reached the main loop")
    }

    fn none_queued(&self) -> bool {
        self.calls.try_recv().is_err()
    }
}

/// A connection served by [`serve`] on a thread of its own, after `before` ran there.
fn connection(before: impl FnOnce() + Send + 'static) -> (Client, Vmm) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (tx, rx) = mpsc::channel();
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let log = crate::logging::logger(slog::Level::Debug, io::sink());
    std::thread::spawn(move || {
        before();
        serve(theirs, tx, wake, log)
    });
    (Client::new(ours), Vmm { calls: rx })
}

const ADD_NET: &str =
    "{\"op\":\"add_net\",\"id\":\"n1\",\"mac\":\"02:00:00:00:00:01\",\"mtu\":1500}\n";

/// Sends `add_net` with the write end of a new pipe, checks that exactly that pipe reached
/// the main loop, answers, and checks that the descriptor is closed once dropped there.
fn add_net_passes_its_fd(c: &mut Client, vmm: &Vmm) {
    let (r, w) = pipe();
    c.send(ADD_NET, &[w.as_raw_fd()]);
    drop(w);
    let call = vmm.next();
    assert_eq!(
        call.request,
        Request::AddNet {
            id: "n1".into(),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: Some(1500)
        }
    );
    let fd = call.fd.expect("the tap's descriptor came with add_net");
    // SAFETY: writing 3 bytes from a live buffer.
    assert_eq!(
        unsafe { libc::write(fd.as_raw_fd(), b"tap".as_ptr().cast(), 3) },
        3
    );
    let mut b = [0u8; 3];
    // SAFETY: reading into a live buffer of 3 bytes.
    assert_eq!(
        unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 3) },
        3
    );
    assert_eq!(&b, b"tap", "the received descriptor is the pipe sent");
    assert!(!all_closed(&r), "the main loop holds it");
    drop(fd);
    call.reply.send(Reply::ok()).unwrap();
    assert_eq!(c.reply()["ok"], true);
    assert!(all_closed(&r), "closed once the main loop dropped it");
}

#[test]
fn an_fd_sent_with_add_net_reaches_the_main_loop() {
    let (mut c, vmm) = connection(|| {});
    add_net_passes_its_fd(&mut c, &vmm);

    // Pipelined: a ping without a descriptor, then add_net with one, read together.
    let (r, w) = pipe();
    c.send("{\"op\":\"ping\"}\n", &[]);
    c.send(ADD_NET, &[w.as_raw_fd()]);
    drop(w);
    let ping = vmm.next();
    assert_eq!((&ping.request, ping.fd.is_some()), (&Request::Ping, false));
    ping.reply.send(Reply::ok()).unwrap();
    let add = vmm.next();
    assert!(
        add.fd.is_some(),
        "the descriptor belongs to the add_net line"
    );
    drop(add.fd);
    add.reply.send(Reply::Err("refused".into())).unwrap();
    assert_eq!(c.reply()["ok"], true);
    assert_eq!(c.error(), "refused");
    assert!(all_closed(&r));

    // A line sent in two parts, the descriptor with the second.
    let (r, w) = pipe();
    let (head, tail) = ADD_NET.split_at(20);
    c.send(head, &[]);
    std::thread::sleep(Duration::from_millis(20));
    c.send(tail, &[w.as_raw_fd()]);
    drop(w);
    let add = vmm.next();
    assert!(
        add.fd.is_some(),
        "the descriptor belongs to the add_net line"
    );
    drop(add);
    assert!(all_closed(&r), "dropping the call closes it");
}

#[test]
fn fds_that_come_with_anything_else_are_closed() {
    let (mut c, vmm) = connection(|| {});

    let (r, w) = pipe();
    c.send("{\"op\":\"ping\"}\n", &[w.as_raw_fd()]);
    drop(w);
    assert_eq!(c.error(), "ping: takes no file descriptor");
    assert!(all_closed(&r), "the descriptor sent with ping is closed");

    let (r, w) = pipe();
    c.send("{\"op\":\"remove_net\",\"id\":\"n1\"}\n", &[w.as_raw_fd()]);
    drop(w);
    assert_eq!(c.error(), "remove_net: takes no file descriptor");
    assert!(all_closed(&r));

    // Two with add_net: both closed, the request refused.
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    c.send(ADD_NET, &[w1.as_raw_fd(), w2.as_raw_fd()]);
    drop((w1, w2));
    let e = c.error();
    assert!(e.contains("at most 1 file descriptor"), "{e}");
    assert!(all_closed(&r1) && all_closed(&r2));
    // Many more than fit: the kernel closes those it does not pass.
    let pipes: Vec<_> = (0..6).map(|_| pipe()).collect();
    let fds: Vec<RawFd> = pipes.iter().map(|(_, w)| w.as_raw_fd()).collect();
    c.send(ADD_NET, &fds);
    let reads: Vec<OwnedFd> = pipes.into_iter().map(|(r, _)| r).collect();
    assert!(c.error().contains("at most 1 file descriptor"));
    assert!(reads.iter().all(all_closed));

    // A request that does not parse.
    let (r, w) = pipe();
    c.send(
        "{\"op\":\"add_net\",\"id\":\"n1\",\"mac\":\"01:00:00:00:00:01\"}\n",
        &[w.as_raw_fd()],
    );
    drop(w);
    assert!(c.error().contains("unicast"));
    assert!(all_closed(&r));

    // A blank line gets no reply; its descriptor is closed all the same.
    let (r, w) = pipe();
    c.send("\n", &[w.as_raw_fd()]);
    drop(w);
    c.send("{\"op\":\"ping\"}\n", &[]);
    let ping = vmm.next();
    assert!(ping.fd.is_none());
    ping.reply.send(Reply::ok()).unwrap();
    assert_eq!(c.reply()["ok"], true);
    assert!(all_closed(&r));

    // add_net without its descriptor never reaches the main loop.
    c.send(ADD_NET, &[]);
    assert!(c
        .error()
        .contains("the tap's file descriptor must come with"));
    assert!(vmm.none_queued(), "refused requests are not passed on");

    // Still served after all that.
    add_net_passes_its_fd(&mut c, &vmm);
}

#[test]
fn a_too_long_line_ends_the_connection_and_closes_its_fds() {
    let (mut c, _vmm) = connection(|| {});
    let (r, w) = pipe();
    // The descriptor comes with the start of a line that never ends within MAX_LINE.
    c.send("{\"op\":\"add_net\",\"id\":\"", &[w.as_raw_fd()]);
    drop(w);
    c.flood(&vec![b'x'; MAX_LINE as usize]);
    assert_eq!(c.error(), "request line too long");
    c.assert_closed();
    assert!(all_closed(&r));
}

/// The connection thread under the API class's real seccomp filter: receiving descriptors,
/// refusing and closing them, handing them on, logging, replying. A forbidden call kills
/// the test binary with SIGSYS (no handler is installed), failing the run.
#[test]
fn the_api_filter_admits_receiving_fds() {
    let program = crate::seccomp::ThreadClass::Api
        .program()
        .expect("the API filter");
    let (mut c, vmm) = connection(move || {
        seccompiler::apply_filter(&program).expect("installing the filter");
    });
    add_net_passes_its_fd(&mut c, &vmm);
    let (r, w) = pipe();
    c.send("{\"op\":\"ping\"}\n", &[w.as_raw_fd()]);
    drop(w);
    assert!(c.error().contains("takes no file descriptor"));
    assert!(all_closed(&r));
    let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
    let fds: Vec<RawFd> = pipes.iter().map(|(_, w)| w.as_raw_fd()).collect();
    c.send(ADD_NET, &fds);
    assert!(c.error().contains("at most 1"));
    c.flood(&vec![b'x'; MAX_LINE as usize + 1]);
    assert_eq!(c.error(), "request line too long");
    c.assert_closed();
}
