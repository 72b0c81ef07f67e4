//! Putting the host processes of a VM into the sandbox's host cgroup (issue 14) without a
//! window in which they run outside it.
//!
//! The runtime creates the cgroup and sets its limits (runtime/src/sandbox/host_cgroup.rs);
//! here the `cgroup.procs` file of each of its directories (one per v1 hierarchy, one under
//! cgroup v2) is opened before any fork, and the forked process writes "0" (itself) to each
//! before it runs anything else: before exec, before it starts a thread or forks a helper
//! of its own, so everything it ever becomes is charged to the cgroup from the start.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use libc::c_int;

use crate::{Error, Result};

/// The `cgroup.procs` files of one cgroup, open for writing.
#[derive(Debug, Default)]
pub struct CgroupJoin {
    procs: Vec<OwnedFd>,
}

impl CgroupJoin {
    /// Opens `<dir>/cgroup.procs` for each of `dirs` (none: processes stay where ward is).
    pub fn open(dirs: &[PathBuf]) -> Result<CgroupJoin> {
        let procs = dirs
            .iter()
            .map(|dir| open_procs(dir))
            .collect::<Result<Vec<_>>>()?;
        Ok(CgroupJoin { procs })
    }

    /// Another handle on the same files (each program keeps its own).
    pub fn try_clone(&self) -> Result<CgroupJoin> {
        let procs = self
            .procs
            .iter()
            .map(|fd| {
                fd.try_clone()
                    .map_err(|e| Error::io("duplicating a cgroup.procs descriptor", e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CgroupJoin { procs })
    }

    /// The descriptors, for the forked child (see [`join`]).
    pub fn fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

fn open_procs(dir: &Path) -> Result<OwnedFd> {
    let path = dir.join("cgroup.procs");
    // std opens with O_CLOEXEC: no program ever inherits the descriptor.
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {} to join the cgroup", path.display()), e))?;
    Ok(file.into())
}

/// Moves the calling process into every cgroup whose `cgroup.procs` is open in `fds`;
/// returns 0, or the errno of the first write that failed.
///
/// # Safety
/// Only raw system calls on descriptors the caller owns: callable between fork and exec.
pub unsafe fn join(fds: &[RawFd]) -> c_int {
    for &fd in fds {
        // "0" names the writer (its whole thread group under v1's cgroup.procs).
        let mut n = libc::write(fd, b"0".as_ptr().cast(), 1);
        while n < 0 && *libc::__errno_location() == libc::EINTR {
            n = libc::write(fd, b"0".as_ptr().cast(), 1);
        }
        if n != 1 {
            return if n < 0 {
                *libc::__errno_location()
            } else {
                libc::EIO
            };
        }
    }
    0
}
