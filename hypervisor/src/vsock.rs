//! Reaching a guest vsock port from the host, whatever carries vsock for this VM.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the host reaches the guest's vsock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VsockEndpoint {
    /// Kernel vhost-vsock: AF_VSOCK to the guest's context ID.
    Kernel { cid: u32 },
    /// Hybrid vsock over a Unix socket (vhost-device-vsock, Firecracker-style): the host
    /// connects to `uds`, writes `CONNECT <port>\n` and reads `OK <host port>\n`.
    Hybrid { uds: PathBuf },
}

/// How long a connection attempt may wait on a handshake line.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl VsockEndpoint {
    pub fn connect(&self, port: u32) -> Result<VsockConnection> {
        match self {
            VsockEndpoint::Hybrid { uds } => connect_hybrid(uds, port),
            VsockEndpoint::Kernel { cid } => connect_kernel(*cid, port),
        }
    }
}

fn connect_hybrid(uds: &PathBuf, port: u32) -> Result<VsockConnection> {
    let mut stream = UnixStream::connect(uds).map_err(|e| {
        Error::Vsock(format!(
            "cannot connect to vsock socket {}: {e}",
            uds.display()
        ))
    })?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| Error::io("setting the vsock handshake timeout", e))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| Error::Vsock(format!("CONNECT {port} via {}: {e}", uds.display())))?;
    // Read byte by byte: whatever follows the reply line belongs to the caller's protocol.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            Err(e) => {
                return Err(Error::Vsock(format!(
                    "no answer to CONNECT {port} via {}: {e}",
                    uds.display()
                )))
            }
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(Error::Vsock(format!(
            "guest port {port} refused the connection via {} (answer {:?})",
            uds.display(),
            String::from_utf8_lossy(&line).trim_end()
        )));
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| Error::io("clearing the vsock handshake timeout", e))?;
    Ok(VsockConnection(OwnedFd::from(stream)))
}

fn connect_kernel(cid: u32, port: u32) -> Result<VsockConnection> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::Vsock(format!("cannot create an AF_VSOCK socket: {e}")))?;
    connect(fd.as_raw_fd(), &VsockAddr::new(cid, port))
        .map_err(|e| Error::Vsock(format!("cannot connect to vsock {cid}:{port}: {e}")))?;
    Ok(VsockConnection(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_line_within_the_limit_is_read_and_nothing_after_it() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut conn = VsockConnection::from(a);
        b.write_all(b"OK\nrest").unwrap();
        let line = conn.read_line_within(64, Duration::from_secs(5)).unwrap();
        assert_eq!(line, b"OK\n");
        let mut rest = [0u8; 4];
        conn.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"rest");
    }

    /// A silent peer and a trickling one both get TimedOut at the limit, not later.
    #[test]
    fn a_silent_or_trickling_peer_times_out_at_the_limit() {
        let limit = Duration::from_millis(300);
        let (a, _silent) = UnixStream::pair().unwrap();
        let mut conn = VsockConnection::from(a);
        let start = Instant::now();
        let err = conn.read_line_within(64, limit).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(start.elapsed() < limit * 3, "took {:?}", start.elapsed());

        let (a, mut b) = UnixStream::pair().unwrap();
        let trickler = std::thread::spawn(move || {
            for _ in 0..40 {
                if b.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut conn = VsockConnection::from(a);
        let start = Instant::now();
        let err = conn.read_line_within(1024, limit).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(took >= limit && took < limit * 3, "took {took:?}");
        drop(conn);
        trickler.join().unwrap();
    }
}

/// One connected stream to a guest port.
#[derive(Debug)]
pub struct VsockConnection(OwnedFd);

impl VsockConnection {
    /// Tells the peer we will write no more (it reads EOF); reading goes on.
    pub fn shutdown_write(&self) -> std::io::Result<()> {
        nix::sys::socket::shutdown(self.0.as_raw_fd(), nix::sys::socket::Shutdown::Write)
            .map_err(std::io::Error::from)
    }

    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(VsockConnection(self.0.try_clone()?))
    }

    pub fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// Sets (or with `None` clears) the send and receive timeouts of the socket.
    pub fn set_timeouts(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        use nix::sys::time::TimeVal;
        // A zero timeval means "no timeout" to the kernel: the smallest real one instead.
        let tv = match timeout {
            None => TimeVal::new(0, 0),
            Some(t) => TimeVal::new(
                t.as_secs() as libc::time_t,
                (t.subsec_micros() as libc::suseconds_t).max(if t.as_secs() == 0 { 1 } else { 0 }),
            ),
        };
        setsockopt(&self.0, sockopt::ReceiveTimeout, &tv).map_err(std::io::Error::from)?;
        setsockopt(&self.0, sockopt::SendTimeout, &tv).map_err(std::io::Error::from)
    }

    /// Reads one line (newline included, at most `max` bytes) within `limit` in all, one
    /// byte at a time so that nothing after it is consumed. A peer that says nothing, or
    /// trickles bytes, gets `TimedOut` when the time is up (issue 14: every read of guest
    /// data is bounded in size and time). The socket's timeouts are cleared afterwards.
    pub fn read_line_within(&mut self, max: usize, limit: Duration) -> std::io::Result<Vec<u8>> {
        let deadline = std::time::Instant::now() + limit;
        let mut line = Vec::with_capacity(64);
        let result = loop {
            if line.len() >= max || line.last() == Some(&b'\n') {
                break Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break Err(timed_out(limit));
            }
            if let Err(e) = self.set_timeouts(Some(left)) {
                break Err(e);
            }
            let mut byte = [0u8; 1];
            match self.read(&mut byte) {
                Ok(0) => break Ok(()),
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    break Err(timed_out(limit))
                }
                Err(e) => break Err(e),
            }
        };
        self.set_timeouts(None)?;
        result.map(|()| line)
    }
}

fn timed_out(limit: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no complete line within {} s", limit.as_secs_f32()),
    )
}

impl From<UnixStream> for VsockConnection {
    fn from(stream: UnixStream) -> Self {
        VsockConnection(OwnedFd::from(stream))
    }
}

impl Read for VsockConnection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        nix::unistd::read(self.0.as_raw_fd(), buf).map_err(std::io::Error::from)
    }
}

impl Write for VsockConnection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        nix::unistd::write(&self.0, buf).map_err(std::io::Error::from)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for VsockConnection {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for VsockConnection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
