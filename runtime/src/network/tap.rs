//! Tap devices: opened through /dev/net/tun by a thread inside the pod's namespace, so the
//! tap is made there. Not persistent: it lives as long as its descriptor, which the VMM
//! holds, so it goes away with the VM whatever ends it.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const TUN: &str = "/dev/net/tun";
/// `_IOW('T', 202, int)` (linux/if_tun.h).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Frames carry a virtio-net header, which both VMMs pass through to the guest's NIC.
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// The name of the `n`th tap of a namespace.
pub fn name(n: usize) -> String {
    format!("tap{n}_ward")
}

/// Makes tap `name` in the calling thread's network namespace; its descriptor.
pub fn open(name: &str) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN)
        .map_err(|e| io::Error::new(e.kind(), format!("{TUN}: {e}")))?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tap name {name:?} is too long"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads (and writes back the name into) the ifreq we pass, which
    // outlives the call; the fd is the tun device we just opened.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}
