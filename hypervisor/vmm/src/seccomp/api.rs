//! The API threads (hypervisor/vmm/src/api/mod.rs): the accept loop on the control socket,
//! which starts a thread per connection, and those connection threads, which read request
//! lines (with recvmsg: `add_net`'s tap comes as SCM_RIGHTS), hand them and a received
//! descriptor to the main thread over a channel and an eventfd, and write replies.
//! No file is opened and no KVM call made here: the main thread does the work.

use seccompiler::BackendError;

use super::{common, thread_creation, Rules};

pub fn rules() -> Result<Rules, BackendError> {
    let mut r = common();
    r.allow_all(&[
        libc::SYS_accept4,
        // Request lines and the descriptors that come with them.
        libc::SYS_recvmsg,
        libc::SYS_sendto,
        // UnixStream::try_clone (F_DUPFD_CLOEXEC).
        libc::SYS_fcntl,
    ]);
    thread_creation(&mut r)?;
    Ok(r)
}
