//! The tap backend: a /dev/net/tun file descriptor that ward-vmm inherits from its parent,
//! which opened it in the container's network namespace (TUNSETIFF with IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR). Every frame read or written carries a [`HDR_LEN`]-byte virtio-net header.
//!
//! All ioctls on the tap happen in [`Tap::setup`], on the main thread: for the taps given at
//! start ([`Tap::open`]) before any seccomp filter is installed, for hot-added ones
//! ([`Tap::from_owned`], the descriptor having come over the control socket) under the main
//! thread's filter, which allows exactly these ioctls. The device worker only reads and
//! writes the tap.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::frame::HDR_LEN;
use super::NetError;

/// `_IOR('T', 210, unsigned int)`: the tap's name and flags.
pub(crate) const TUNGETIFF: u64 = 0x8004_54d2;
/// `_IOW('T', 208, unsigned int)`: which offloads the reader accepts.
pub(crate) const TUNSETOFFLOAD: u64 = 0x4004_54d0;
/// `_IOW('T', 216, int)`: the size of the virtio-net header on each frame.
pub(crate) const TUNSETVNETHDRSZ: u64 = 0x4004_54d8;

#[cfg(test)]
pub const IFF_TUN: i16 = 0x0001;
pub const IFF_TAP: i16 = 0x0002;
pub const IFF_NO_PI: i16 = 0x1000;
pub const IFF_VNET_HDR: i16 = 0x4000;

/// `struct ifreq` as TUNGETIFF fills it: the name, then the flags in the union (40 bytes).
#[repr(C)]
#[derive(Default)]
pub(crate) struct IfReq {
    pub(crate) name: [u8; libc::IFNAMSIZ],
    pub(crate) flags: i16,
    pub(crate) pad: [u8; 22],
}

/// An open tap, checked and configured.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Takes a copy of inherited descriptor `fd` (the original stays open and untouched
    /// but for the flags [`Tap::setup`] sets) and sets the copy up.
    pub fn open(fd: RawFd) -> Result<Self, NetError> {
        // SAFETY: F_GETFD only reads descriptor flags; it passes no memory, and fails with
        // EBADF for a number that is not an open descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(NetError::NotOpen {
                fd,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: F_DUPFD_CLOEXEC passes no memory; it returns a new descriptor or -1.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(NetError::Dup {
                fd,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `dup` was just returned by fcntl, is open, and nothing else owns it.
        Self::setup(unsafe { OwnedFd::from_raw_fd(dup) }, fd)
    }

    /// Sets up a tap this process was handed (a hot-added card's, received over the control
    /// socket): the descriptor is the tap's from now on, and closed with it, or at once when
    /// it is refused.
    pub fn from_owned(tap: OwnedFd) -> Result<Self, NetError> {
        let fd = tap.as_raw_fd();
        Self::setup(tap, fd)
    }

    /// The checks and set-up both ways in share: `tap` must be a tap with IFF_NO_PI and
    /// IFF_VNET_HDR; its header size is set to [`HDR_LEN`], all offloads are turned off, and
    /// it is made non-blocking. `fd` is the number errors name (what the caller was given).
    fn setup(tap: OwnedFd, fd: RawFd) -> Result<Self, NetError> {
        let file = File::from(tap);

        let mut req = IfReq::default();
        // SAFETY: TUNGETIFF writes one `struct ifreq` (40 bytes on 64-bit Linux) through the
        // pointer; IfReq is repr(C) with that size and lives across the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNGETIFF as _, &mut req as *mut IfReq) } < 0 {
            return Err(NetError::NotTap {
                fd,
                source: io::Error::last_os_error(),
            });
        }
        let end = req
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(req.name.len());
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        let missing = if req.flags & IFF_TAP == 0 {
            Some("IFF_TAP (it is a layer-3 tun device)")
        } else if req.flags & IFF_NO_PI == 0 {
            Some("IFF_NO_PI")
        } else if req.flags & IFF_VNET_HDR == 0 {
            Some("IFF_VNET_HDR")
        } else {
            None
        };
        if let Some(flag) = missing {
            return Err(NetError::TapFlags { fd, name, flag });
        }

        let hdr_len = HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points at a live
        // c_int.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                TUNSETVNETHDRSZ as _,
                &hdr_len as *const libc::c_int,
            )
        };
        if rc < 0 {
            return Err(NetError::TapSetup {
                name,
                what: "TUNSETVNETHDRSZ",
                source: io::Error::last_os_error(),
            });
        }
        // No offloads are negotiated with the guest: the tap must hand over only whole,
        // checksummed frames (its parent may have turned some on).
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD as _, 0 as libc::c_ulong) } < 0 {
            return Err(NetError::TapSetup {
                name,
                what: "TUNSETOFFLOAD",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: F_GETFL/F_SETFL pass no memory; the descriptor is ours.
        let nonblock = unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            flags >= 0
                && libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
        };
        if !nonblock {
            return Err(NetError::TapSetup {
                name,
                what: "O_NONBLOCK",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tap { file, name })
    }

    /// The tap's interface name (in the container's network namespace).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet (header and frame); `WouldBlock` when none is queued.
    pub fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet (header and frame) in one system call.
    pub fn write_packet(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
