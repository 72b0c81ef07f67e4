//! A process holding a new network namespace for an engine's prestart hooks.
//!
//! docker (libnetwork) attaches a container to its bridge from a prestart hook: the hook
//! moves a veth into `/proc/PID/ns/net` of the PID in the container's state. That must
//! happen before the VM boots, so that the namespace can be carried into it like
//! podman's; the relay, the container's PID proper, exists only later. So a holder, a
//! forked child in a namespace of its own, stands for it during the hooks, and the relay
//! joins the namespace when it starts.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

pub struct NetnsHolder {
    pub pid: i32,
    /// Closing it lets the holder exit.
    stop: Option<OwnedFd>,
    netns: File,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

impl NetnsHolder {
    pub fn spawn() -> io::Result<NetnsHolder> {
        let (stop_read, stop_write) = pipe()?;
        let (ready_read, ready_write) = pipe()?;
        // SAFETY: the child makes only async-signal-safe calls (close, unshare, write,
        // read, _exit) on descriptors that exist at the fork, and touches no memory the
        // parent's other threads could hold locked.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child, see above.
            unsafe {
                libc::close(stop_write.as_raw_fd());
                libc::close(ready_read.as_raw_fd());
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    libc::_exit(1);
                }
                let ok = b'k';
                libc::write(ready_write.as_raw_fd(), (&ok as *const u8).cast(), 1);
                let mut byte = 0u8;
                // Returns at EOF, when the parent drops the holder (or dies).
                libc::read(stop_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        drop(stop_read);
        drop(ready_write);
        let mut ready = [0u8; 1];
        let n = nix::unistd::read(ready_read.as_raw_fd(), &mut ready).unwrap_or(0);
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let netns = if n == 1 {
            File::open(&path)
        } else {
            Err(io::Error::other(
                "the network namespace holder could not make its namespace",
            ))
        };
        match netns {
            Ok(netns) => Ok(NetnsHolder {
                pid,
                stop: Some(stop_write),
                netns,
            }),
            Err(e) => {
                end(pid, stop_write);
                Err(e)
            }
        }
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// The namespace, open: for setns, and alive for as long as this is.
    pub fn netns(&self) -> &File {
        &self.netns
    }
}

/// Lets the holder `pid` exit (EOF on its pipe) and reaps it.
fn end(pid: i32, stop: OwnedFd) {
    drop(stop);
    // SAFETY: pid is our child; waiting reaps it.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            end(self.pid, stop);
        }
    }
}

impl std::fmt::Debug for NetnsHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetnsHolder(pid {})", self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_has_a_namespace_of_its_own_and_goes_when_dropped() {
        let holder = NetnsHolder::spawn().expect("holder");
        let theirs = std::fs::read_link(holder.netns_path()).unwrap();
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(theirs, ours);
        let pid = holder.pid;
        drop(holder);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
