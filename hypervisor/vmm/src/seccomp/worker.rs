//! Device worker threads (hypervisor/vmm/src/devices/virtio/worker.rs): an epoll loop over
//! queue eventfds and the device's backend. Between them the workers read and write disk
//! images at offsets and flush them (virtio-blk), accept, connect and move bytes on Unix
//! sockets (virtio-vsock's hybrid backend), forward vhost-user messages (virtio-fs) and
//! draw host entropy (virtio-rng), and read and write frames on a tap (virtio-net: one
//! read or write per frame, the tap's ioctls all happen before any filter). No thread
//! creation, no opening of files, no KVM.

use seccompiler::BackendError;

use super::{common, Rules};

/// `ioctl(fd, FIONBIO, ...)`: what `set_nonblocking` on a Unix stream does.
pub const FIONBIO: u64 = libc::FIONBIO;

pub fn rules() -> Result<Rules, BackendError> {
    let mut r = common();
    r.allow_all(&[
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        // virtio-blk: requests at offsets, and flushes.
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        // virtio-vsock and vhost-user: Unix stream sockets.
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_shutdown,
        libc::SYS_readv,
        libc::SYS_fcntl,
        libc::SYS_poll,
        libc::SYS_ppoll,
    ]);
    // Guest-initiated vsock connections go to `<uds>_<port>`: Unix sockets only.
    r.allow_arg_in(libc::SYS_socket, 0, &[libc::AF_UNIX as u64])?;
    r.allow_arg_in(libc::SYS_ioctl, 1, &[FIONBIO])?;
    Ok(r)
}
