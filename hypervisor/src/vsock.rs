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
