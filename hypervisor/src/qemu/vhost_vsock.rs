//! In-kernel vhost-vsock, where the host has a usable /dev/vhost-vsock.
//!
//! Every VM needs a context ID no other VM on the host uses. Rather than guess one and
//! let QEMU fail on a clash, ward opens /dev/vhost-vsock itself and sets the CID with
//! VHOST_VSOCK_SET_GUEST_CID, which the kernel refuses (EADDRINUSE) for a CID in use:
//! a free CID is then held by that descriptor, with no window for another VM to take
//! it. QEMU gets the descriptor (`vhostfd=`) and sets the same CID again, which the
//! kernel accepts for the same device.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::{Error, Result};

const DEVICE: &str = "/dev/vhost-vsock";
/// The first CID a guest may have (0-2 are the hypervisor, local and host).
const FIRST_GUEST_CID: u32 = 3;
/// How many CIDs to try after the first one taken.
const ATTEMPTS: u32 = 1024;

nix::ioctl_write_ptr!(set_guest_cid, 0xAF, 0x60, u64);

/// A guest CID held by an open /dev/vhost-vsock.
#[derive(Debug)]
pub struct ReservedCid {
    pub cid: u32,
    pub fd: OwnedFd,
}

/// Whether in-kernel vhost-vsock can be used here.
pub fn available() -> bool {
    open().is_ok()
}

fn open() -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(DEVICE)
        .map(OwnedFd::from)
}

/// Reserves a free CID; `None` when /dev/vhost-vsock cannot be opened (use the helper).
pub fn reserve() -> Option<Result<ReservedCid>> {
    let fd = open().ok()?;
    Some(reserve_on(fd, start_cid()))
}

/// Starting at a different place per launch keeps concurrent launches from walking the
/// same sequence of taken CIDs.
fn start_cid() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = nanos ^ std::process::id().rotate_left(16);
    FIRST_GUEST_CID + mixed % 0x00ff_ffff
}

fn reserve_on(fd: OwnedFd, start: u32) -> Result<ReservedCid> {
    for offset in 0..ATTEMPTS {
        let cid = start.wrapping_add(offset).max(FIRST_GUEST_CID);
        let value = u64::from(cid);
        // SAFETY: VHOST_VSOCK_SET_GUEST_CID reads one u64 from the pointer, which points
        // at a live local.
        match unsafe { set_guest_cid(fd.as_raw_fd(), &value) } {
            Ok(_) => return Ok(ReservedCid { cid, fd }),
            Err(nix::errno::Errno::EADDRINUSE) => continue,
            Err(e) => {
                return Err(Error::Vsock(format!(
                    "setting guest CID {cid} on {DEVICE}: {e}"
                )))
            }
        }
    }
    Err(Error::Vsock(format!(
        "no free guest CID among {ATTEMPTS} tried from {start}"
    )))
}
