//! The control socket: a Unix socket where each line is a JSON request and each request
//! gets one JSON reply line. Connections are served by a thread each; requests go to the
//! main loop, which owns the VM, through a channel plus an eventfd that wakes its epoll.
//!
//! A request may carry one file descriptor (`add_net`'s tap), sent by SCM_RIGHTS with the
//! bytes of its line: the line in which the last byte received with the descriptor lies
//! is the one it belongs to (the kernel ends a read after the bytes of the `sendmsg` that
//! carried descriptors, so a client that sends each such line with one `sendmsg` gets it
//! right). A descriptor that comes with any other request, more than one with a request,
//! or one with a request that fails, is closed before the reply is written.

pub mod protocol;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use slog::{debug, warn, Logger};
use vmm_sys_util::eventfd::EventFd;

pub use protocol::{Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the API socket {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the API eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("starting the API thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    Seccomp(crate::seccomp::Error),
}

/// The longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// One request and where its reply goes.
pub struct Call {
    pub request: Request,
    /// The descriptor that came with the request: always there for `add_net` (the tap),
    /// never for anything else.
    pub fd: Option<OwnedFd>,
    pub reply: Sender<Reply>,
}

/// The main loop's end: `wake` becomes readable when calls are queued.
pub struct ApiServer {
    path: PathBuf,
    pub calls: Receiver<Call>,
    pub wake: Arc<EventFd>,
}

impl ApiServer {
    /// Binds `path` (replacing a stale socket) and starts accepting.
    pub fn start(path: &Path, log: Logger) -> Result<Self, Error> {
        let bind_err = |source| Error::Bind {
            path: path.display().to_string(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(path).map_err(bind_err)?;
            }
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?);
        let (tx, rx) = mpsc::channel();
        let thread_wake = wake.clone();
        // The thread confines itself before it accepts anything, and says whether it could.
        let (confined_tx, confined_rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                let confined = crate::seccomp::enter(crate::seccomp::ThreadClass::Api);
                let ok = confined.is_ok();
                let _ = confined_tx.send(confined);
                if ok {
                    accept_loop(listener, tx, thread_wake, log)
                }
            })
            .map_err(Error::Spawn)?;
        match confined_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Seccomp(e)),
            Err(_) => return Err(Error::Seccomp(crate::seccomp::Error::ThreadGone)),
        }
        Ok(ApiServer {
            path: path.to_path_buf(),
            calls: rx,
            wake,
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, tx: Sender<Call>, wake: Arc<EventFd>, log: Logger) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let (tx, wake, conn_log) = (tx.clone(), wake.clone(), log.clone());
                let spawned = std::thread::Builder::new()
                    .name("api-conn".into())
                    .spawn(move || serve(stream, tx, wake, conn_log));
                if let Err(e) = spawned {
                    warn!(log, "cannot serve an API connection"; "error" => %e);
                }
            }
            Err(e) => warn!(log, "accepting an API connection"; "error" => %e),
        }
    }
}

fn serve(stream: UnixStream, tx: Sender<Call>, wake: Arc<EventFd>, log: Logger) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut conn = Connection::new(stream);
    loop {
        let (line, passed) = match conn.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(ReadError::Io(e)) => {
                debug!(log, "reading an API connection"; "error" => %e);
                return;
            }
            Err(ReadError::TooLong) => {
                let _ = writer.write_all(
                    Reply::Err("request line too long".into())
                        .to_line()
                        .as_bytes(),
                );
                return;
            }
        };
        // Any descriptor that came with the line is gone by the time the reply is written.
        let Some(reply) = answer(&line, passed, &tx, &wake, &log) else {
            continue;
        };
        if writer.write_all(reply.to_line().as_bytes()).is_err() {
            return;
        }
    }
}

/// The reply to one line (none to a blank one); `passed` is used or closed.
fn answer(
    line: &[u8],
    passed: Passed,
    tx: &Sender<Call>,
    wake: &EventFd,
    log: &Logger,
) -> Option<Reply> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(Reply::Err("bad request: not UTF-8".into()));
    };
    if text.trim().is_empty() {
        return None;
    }
    let request = match protocol::parse(text) {
        Ok(request) => request,
        Err(e) => return Some(Reply::Err(e)),
    };
    let fd = match (passed.into_single(), request.takes_fd()) {
        (Err(()), _) => {
            return Some(Reply::Err(format!(
                "{}: at most {MAX_FDS} file descriptor may come with a request",
                request.op()
            )))
        }
        (Ok(None), true) => {
            return Some(Reply::Err(format!(
                "{}: the tap's file descriptor must come with the request line (SCM_RIGHTS)",
                request.op()
            )))
        }
        (Ok(Some(_)), false) => {
            return Some(Reply::Err(format!(
                "{}: takes no file descriptor",
                request.op()
            )))
        }
        (Ok(fd), _) => fd,
    };
    debug!(log, "API request"; "request" => format!("{request:?}"), "fd" => fd.as_ref().map(AsRawFd::as_raw_fd));
    let (rtx, rrx) = mpsc::channel();
    let call = Call {
        request,
        fd,
        reply: rtx,
    };
    // Not sent, the call (and its descriptor) is dropped here; sent, the main loop drops it.
    if tx.send(call).is_err() || wake.write(1).is_err() {
        return Some(Reply::Err("the VMM is stopping".into()));
    }
    Some(
        rrx.recv()
            .unwrap_or_else(|_| Reply::Err("the VMM is stopping".into())),
    )
}

/// The most descriptors one request may carry.
const MAX_FDS: usize = 1;

/// Bytes read from the socket at a time.
const CHUNK: usize = 4096;

/// What came with a request line besides its bytes.
#[derive(Debug, Default)]
struct Passed {
    fds: Vec<OwnedFd>,
    /// More were sent than there was room for: the kernel closed those.
    truncated: bool,
}

impl Passed {
    /// The one descriptor or none; Err (closing them all) for more.
    fn into_single(mut self) -> Result<Option<OwnedFd>, ()> {
        if self.truncated || self.fds.len() > MAX_FDS {
            return Err(());
        }
        Ok(self.fds.pop())
    }
}

enum ReadError {
    Io(io::Error),
    /// No newline within [`MAX_LINE`] bytes.
    TooLong,
}

/// The reading end of a connection: request lines and the descriptors that came with them.
struct Connection {
    stream: UnixStream,
    /// Received bytes not yet handed out as lines.
    buf: Vec<u8>,
    /// Received descriptors, each at the offset in `buf` of the last byte that came with it.
    passed: Vec<(usize, Passed)>,
}

impl Connection {
    fn new(stream: UnixStream) -> Self {
        Connection {
            stream,
            buf: Vec::new(),
            passed: Vec::new(),
        }
    }

    /// The next line (with its newline, but for a last line cut by end of file) and what
    /// came with it; None at the end.
    fn next_line(&mut self) -> Result<Option<(Vec<u8>, Passed)>, ReadError> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let len = scanned + i + 1;
                if len as u64 > MAX_LINE {
                    return Err(ReadError::TooLong);
                }
                return Ok(Some(self.take(len)));
            }
            scanned = self.buf.len();
            if self.buf.len() as u64 >= MAX_LINE {
                return Err(ReadError::TooLong);
            }
            let mut chunk = [0u8; CHUNK];
            let (n, passed) = recv_with_fds(&self.stream, &mut chunk).map_err(ReadError::Io)?;
            if n == 0 {
                // Descriptors never come without bytes on a stream socket; `passed` is empty.
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let len = self.buf.len();
                return Ok(Some(self.take(len)));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if !passed.fds.is_empty() || passed.truncated {
                self.passed.push((self.buf.len() - 1, passed));
            }
        }
    }

    /// Takes the first `len` bytes and what came with them.
    fn take(&mut self, len: usize) -> (Vec<u8>, Passed) {
        let line: Vec<u8> = self.buf.drain(..len).collect();
        let mut mine = Passed::default();
        let mut rest = Vec::new();
        for (at, p) in self.passed.drain(..) {
            if at < len {
                mine.fds.extend(p.fds);
                mine.truncated |= p.truncated;
            } else {
                rest.push((at - len, p));
            }
        }
        self.passed = rest;
        (line, mine)
    }
}

/// Room for one SCM_RIGHTS message of [`MAX_FDS`] descriptors. The kernel closes those
/// that do not fit (and says so with MSG_CTRUNC); alignment may leave room for one more,
/// which [`Passed::into_single`] refuses.
// SAFETY: CMSG_SPACE only computes a size from its argument.
const CMSG_ROOM: usize = unsafe { libc::CMSG_SPACE((MAX_FDS * 4) as u32) } as usize;

/// One recvmsg into `buf`: the bytes read (0 at the end) and the descriptors that came with
/// them, owned (and close-on-exec) from here on.
fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Passed)> {
    // u64s: aligned for cmsghdr.
    let mut control = [0u64; 4];
    const _: () = assert!(CMSG_ROOM <= std::mem::size_of::<[u64; 4]>());
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr (no name, no buffers); the fields that matter are
    // set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_ROOM as _;
    let n = loop {
        // SAFETY: msg points at one iovec over `buf` and at `control`, live and of the
        // lengths given; the kernel writes only within them.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut passed = Passed {
        fds: Vec::new(),
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    };
    // SAFETY: the kernel filled `control` with msg_controllen bytes of control messages;
    // CMSG_FIRSTHDR and CMSG_NXTHDR only return headers that lie within them (or null),
    // and an SCM_RIGHTS message's data holds (cmsg_len - header) / 4 descriptors, just
    // installed in this process and owned by nothing else.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let header = data as usize - cmsg as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header)
                    / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                    passed.fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, passed))
}

#[cfg(test)]
mod tests;
