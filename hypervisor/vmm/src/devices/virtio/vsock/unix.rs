//! The host side of the hybrid vsock backend: Unix sockets.
//!
//! Host→guest: a client connects to `uds_path` and writes `CONNECT <port>\n`; once the guest
//! accepts, it reads `OK <host port>\n` and the stream carries the connection's bytes.
//! Guest→host: a connection to host port P is a connection to the socket `<uds_path>_<P>`.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Longest handshake line accepted, "CONNECT 4294967295\n" with room for stray spaces.
pub const MAX_HANDSHAKE: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("vsock handshake longer than {MAX_HANDSHAKE} bytes")]
    TooLong,
    #[error("vsock handshake is not `CONNECT <port>`: {0:?}")]
    BadCommand(String),
    #[error("host client closed the connection during the handshake")]
    Closed,
    #[error("reading the vsock handshake failed: {0}")]
    Io(String),
}

/// A host client that has not finished its `CONNECT` line.
pub struct Handshake {
    pub stream: UnixStream,
    line: Vec<u8>,
}

impl Handshake {
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            line: Vec::new(),
        }
    }

    /// Reads what the client sent so far; Some(port) once the line is complete.
    ///
    /// Bytes are read one at a time so that data the client sends right after the line stays
    /// in the socket for the guest.
    pub fn poll(&mut self) -> Result<Option<u32>, HandshakeError> {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(_) if byte[0] == b'\n' => return parse_connect(&self.line).map(Some),
                Ok(_) => {
                    if self.line.len() == MAX_HANDSHAKE {
                        return Err(HandshakeError::TooLong);
                    }
                    self.line.push(byte[0]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HandshakeError::Io(e.to_string())),
            }
        }
    }
}

/// Parses `CONNECT <port>` (without the newline).
pub fn parse_connect(line: &[u8]) -> Result<u32, HandshakeError> {
    let bad = || HandshakeError::BadCommand(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("CONNECT"), Some(port), None) => port.parse::<u32>().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The socket a guest connection to host port `port` is forwarded to.
pub fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut name: OsString = uds_path.as_os_str().to_owned();
    name.push(format!("_{port}"));
    PathBuf::from(OsString::from_vec(name.into_vec()))
}

/// Connects to a Unix socket without blocking: a listener with a full backlog is refused
/// (EAGAIN) instead of stalling the device worker.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data, for which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: socket() takes no pointers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we just created and that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid, NUL-terminated sockaddr_un that outlives the call, and len does
    // not exceed its size (checked against sun_path above).
    let rc = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}
